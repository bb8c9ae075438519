package channellayer

import (
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Every field of redis.ClusterOptions is either copied by nodeOptions or
// left out on purpose, with the reason. When go-redis adds a field this
// test fails: decide which it is, and add it to nodeOptions or to
// leftOut.
var leftOut = map[string]string{
	"Addrs":                      "the seeds of the cluster; each connection gets its master's address",
	"NewClient":                  "the cluster client's hook for its own node clients",
	"MaxRedirects":               "redirects are the cluster client's; the layer follows MOVED itself",
	"ReadOnly":                   "the layer subscribes on masters only",
	"RouteByLatency":             "command routing of the cluster client",
	"RouteRandomly":              "command routing of the cluster client",
	"RouteByLatencyTolerance":    "command routing of the cluster client",
	"ClusterSlots":               "the layer reads the slot map from the nodes",
	"MaxRetries":                 "the subscriber retries on its own schedule",
	"MinRetryBackoff":            "the subscriber retries on its own schedule",
	"MaxRetryBackoff":            "the subscriber retries on its own schedule",
	"MaxConcurrentDials":         "pool setting; one connection per node",
	"PoolFIFO":                   "pool setting; one connection per node",
	"PoolSize":                   "one connection per node",
	"PoolTimeout":                "pool setting; one connection per node",
	"MinIdleConns":               "pool setting; one connection per node",
	"MaxIdleConns":               "pool setting; one connection per node",
	"MaxActiveConns":             "pool setting; one connection per node",
	"ConnMaxIdleTime":            "a subscription connection is never idle in the pool",
	"ConnMaxLifetime":            "a subscription connection lives as long as its subscriptions",
	"ConnMaxLifetimeJitter":      "a subscription connection lives as long as its subscriptions",
	"PipelineReadBufferSize":     "no pipelines on a subscription connection",
	"PipelineWriteBufferSize":    "no pipelines on a subscription connection",
	"PipelinePoolSize":           "no pipelines on a subscription connection",
	"AutoPipelineOptions":        "no pipelines on a subscription connection",
	"DisableRoutingPolicies":     "command routing of the cluster client",
	"PushNotificationProcessor":  "the cluster client's push handling; node clients make their own",
	"FailingTimeoutSeconds":      "the cluster client's node health; the layer tracks its own",
	"MaintNotificationsConfig":   "maintenance hand-offs are the cluster client's; the layer follows the slot map",
	"ShardPicker":                "command routing of the cluster client",
	"ClusterStateReloadInterval": "the layer reads the slot map on its own schedule",
}

// TestNodeOptionsCoverClusterOptions guards nodeOptions, which copies
// fields that go-redis has no public way to derive without the slot map:
// each field of ClusterOptions must be copied or listed in leftOut, and a
// copied field must arrive with its value.
func TestNodeOptionsCoverClusterOptions(t *testing.T) {
	var co redis.ClusterOptions
	cv := reflect.ValueOf(&co).Elem()
	ct := cv.Type()
	var copied []string
	for i := range ct.NumField() {
		f := ct.Field(i)
		if !f.IsExported() {
			continue
		}
		if _, ok := leftOut[f.Name]; ok {
			continue
		}
		if setNonZero(cv.Field(i)) {
			copied = append(copied, f.Name)
		} else if _, ok := reflect.TypeFor[redis.Options]().FieldByName(f.Name); !ok {
			// An interface: no value to set, but it must have somewhere to go.
			t.Errorf("ClusterOptions.%s is new and redis.Options has no such field: add it to leftOut with the reason", f.Name)
		}
	}
	for name := range leftOut {
		if _, ok := ct.FieldByName(name); !ok {
			t.Errorf("leftOut names %s, which ClusterOptions no longer has", name)
		}
	}
	ov := reflect.ValueOf(nodeOptions(&co, "127.0.0.1:1")).Elem()
	for _, name := range copied {
		got := ov.FieldByName(name)
		if !got.IsValid() {
			t.Errorf("ClusterOptions.%s is new and redis.Options has no such field: add it to leftOut with the reason", name)
			continue
		}
		if got.IsZero() {
			t.Errorf("ClusterOptions.%s is not copied by nodeOptions: copy it, or add it to leftOut with the reason", name)
		}
	}
}

// setNonZero gives v a value other than its zero, and reports whether it
// could (not for an interface).
func setNonZero(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.Type() == reflect.TypeFor[time.Duration]() {
			v.SetInt(int64(time.Second))
		} else {
			v.SetInt(3)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(3)
	case reflect.Func:
		v.Set(reflect.MakeFunc(v.Type(), func([]reflect.Value) []reflect.Value { return nil }))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
	default:
		return false
	}
	return true
}
