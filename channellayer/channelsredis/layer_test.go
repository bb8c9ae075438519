package channelsredis_test

import (
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/channelsredis"
	"github.com/heraldhq/herald/channellayer/layertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func redisClient(t *testing.T) *redis.Client { return layertest.RedisClient(t) }

// perTest returns the same value for every call made for one test, so
// that layers made for one test share a prefix and behave as one
// deployment.
func perTest(newValue func(t *testing.T) string) func(t *testing.T) string {
	var mu sync.Mutex
	seen := map[*testing.T]string{}
	return func(t *testing.T) string {
		mu.Lock()
		defer mu.Unlock()
		v, ok := seen[t]
		if !ok {
			v = newValue(t)
			seen[t] = v
		}
		return v
	}
}

func prefix(t *testing.T) string { return layertest.Prefix(t) }

var secrets = []string{"a first secret", "an older secret"}

func TestCore(t *testing.T) {
	for _, enc := range []bool{false, true} {
		name := "Plain"
		if enc {
			name = "Encrypted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := perTest(prefix)
			layertest.Run(t, func(t *testing.T) channellayer.Layer {
				// The suite sends bursts of 500 to one member; channels_redis's
				// default capacity of 100 would, by design, refuse part of a
				// burst on a loaded machine (see TestCoreCapacityAndExpiry).
				cfg := channelsredis.CoreConfig{Prefix: p(t), Capacity: 1000}
				if enc {
					cfg.SymmetricEncryptionKeys = secrets
				}
				l, err := channelsredis.NewCore(redisClient(t), cfg)
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		})
	}
}

func TestPubSub(t *testing.T) {
	for _, enc := range []bool{false, true} {
		name := "Plain"
		if enc {
			name = "Encrypted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := perTest(prefix)
			layertest.Run(t, func(t *testing.T) channellayer.Layer {
				cfg := channelsredis.PubSubConfig{Prefix: p(t)}
				if enc {
					cfg.SymmetricEncryptionKeys = secrets
				}
				l, err := channelsredis.NewPubSub(redisClient(t), cfg)
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		})
	}
}

func TestGroupLimit(t *testing.T) {
	t.Run("Core", func(t *testing.T) {
		l, err := channelsredis.NewCore(redisClient(t), channelsredis.CoreConfig{Prefix: prefix(t), MaxGroups: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		layertest.GroupLimit(t, l, 3)
	})
	t.Run("PubSub", func(t *testing.T) {
		l, err := channelsredis.NewPubSub(redisClient(t), channelsredis.PubSubConfig{Prefix: prefix(t), MaxGroups: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		layertest.GroupLimit(t, l, 3)
	})
}
