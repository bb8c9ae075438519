package server

import (
	"flag"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/router"
)

func TestFlagBeatsEnvironment(t *testing.T) {
	env := map[string]string{"HERALD_ADDR": "127.0.0.1:9000", "HERALD_QUEUE_BYTES": "65536"}
	cfg, err := Parse([]string{"-addr", "127.0.0.1:9100"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9100" || cfg.QueueBytes != 65536 {
		t.Fatalf("addr %s queue %d", cfg.Addr, cfg.QueueBytes)
	}
	cfg, err = Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:8000" || cfg.redisOpts != nil || cfg.pgConfig != nil || cfg.QueueBytes != 1<<20 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestWriteDelay(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 10 * time.Millisecond, "0": 0, "25ms": 25 * time.Millisecond} {
		cfg, err := Parse(nil, func(k string) string { return map[string]string{"HERALD_WRITE_DELAY": v}[k] }, io.Discard)
		if err != nil || cfg.WriteDelay != want {
			t.Errorf("HERALD_WRITE_DELAY=%q: %v, %v; want %v", v, cfg.WriteDelay, err, want)
		}
	}
	for _, v := range []string{"-1ms", "2s", "soon"} {
		if _, err := Parse([]string{"-write-delay", v}, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("-write-delay %s accepted", v)
		}
	}
}

func TestCompressionSetting(t *testing.T) {
	for args, want := range map[string]bool{"": false, "true": true, "0": false} {
		var argv []string
		if args != "" {
			argv = []string{"-compression=" + args}
		}
		cfg, err := Parse(argv, func(string) string { return "" }, io.Discard)
		if err != nil || cfg.Compression != want {
			t.Errorf("-compression=%q: %v, %v; want %v", args, cfg.Compression, err, want)
		}
	}
	if _, err := Parse([]string{"-compression", "sometimes"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Error("-compression sometimes accepted")
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	if _, err := Parse([]string{"-help"}, func(string) string { return "" }, &out); err != flag.ErrHelp {
		t.Fatalf("err %v, want flag.ErrHelp", err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), "-"+s.flag) || !strings.Contains(out.String(), "$"+s.env) {
			t.Errorf("--help does not document -%s / $%s", s.flag, s.env)
		}
	}
}

func TestAllowedOrigins(t *testing.T) {
	cfg, err := Parse([]string{"-allowed-origins", "https://app.example.com, *.example.org,"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.AllowedOrigins, "|") != "app.example.com|*.example.org" {
		t.Fatalf("origins %q", cfg.AllowedOrigins)
	}
}

// TestReadmeDocumentsEverySetting keeps README's settings tables in step
// with the settings table: a row for every setting, naming its variable,
// with the table's default first in its default column (or "unset" for
// none), and no row for a setting the server does not read.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for line := range strings.SplitSeq(string(readme), "\n") {
		if strings.HasPrefix(line, "| `-") {
			cells := strings.Split(line, "|")
			if len(cells) < 5 {
				t.Errorf("README settings row without four columns: %s", line)
				continue
			}
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			rows[strings.Trim(cells[1], "`")] = cells[2:]
		}
	}
	for _, s := range settings {
		row, ok := rows["-"+s.flag]
		if !ok {
			t.Errorf("README has no row for -%s", s.flag)
			continue
		}
		if env := row[0]; env != "`"+s.env+"`" {
			t.Errorf("README row for -%s names %s, want `%s`", s.flag, env, s.env)
		}
		want := "`" + s.def + "`"
		if s.def == "" {
			want = "unset"
		}
		if def := row[1]; def != want && !strings.HasPrefix(def, want+" ") && !strings.HasPrefix(def, want+":") {
			t.Errorf("README gives -%s the default %q, want %s", s.flag, def, want)
		}
		delete(rows, "-"+s.flag)
	}
	for flag := range rows {
		t.Errorf("README documents %s, which the server does not read", flag)
	}
}

// TestDefaultsAreTheParts: where a part exports its default, the
// settings table's default is that value, so that the server and a part
// used on its own cannot disagree.
func TestDefaultsAreTheParts(t *testing.T) {
	cfg, err := Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.History, channellayer.DefaultHistory) {
		t.Errorf("HERALD_HISTORY's default is %+v, channellayer.DefaultHistory %+v", cfg.History, channellayer.DefaultHistory)
	}
	if cfg.HistoryMaxBytes != channellayer.DefaultHistoryMaxBytes || cfg.IPv6Prefix != router.DefaultIPv6Prefix {
		t.Errorf("defaults: history bytes %d, IPv6 prefix %d", cfg.HistoryMaxBytes, cfg.IPv6Prefix)
	}
}

// TestRetiredSettingStops: a deployment that still sets a setting that is no
// longer read must not run silently on the new one's default.
func TestRetiredSettingStops(t *testing.T) {
	env := map[string]string{"HERALD_QUEUE_SIZE": "512"}
	_, err := Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HERALD_QUEUE_BYTES") {
		t.Fatalf("HERALD_QUEUE_SIZE set: %v, want an error naming HERALD_QUEUE_BYTES", err)
	}
}

func TestHistoryBoundAndGroupCapSettings(t *testing.T) {
	cfg, err := Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HistoryMaxBytes != 64<<20 || cfg.MaxInstanceGroups != 100_000 {
		t.Fatalf("defaults: history bytes %d, instance groups %d", cfg.HistoryMaxBytes, cfg.MaxInstanceGroups)
	}
	env := map[string]string{"HERALD_HISTORY_MAX_BYTES": "1048576", "HERALD_MAX_INSTANCE_GROUPS": "5"}
	cfg, err = Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil || cfg.HistoryMaxBytes != 1<<20 || cfg.MaxInstanceGroups != 5 {
		t.Fatalf("set: %v, %d, %d", err, cfg.HistoryMaxBytes, cfg.MaxInstanceGroups)
	}
	for _, args := range [][]string{{"-history-max-bytes", "100"}, {"-history-max-bytes", "lots"}, {"-max-instance-groups", "0"}} {
		if _, err := Parse(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestAllowedHostsSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" for nil: any Host
	}{
		{[]string{"-addr", "127.0.0.1:8000"}, "localhost|127.0.0.1|[::1]"},
		{[]string{"-addr", "localhost:8000", "-allowed-hosts", "herald.example.com, *.example.org,"}, "localhost|127.0.0.1|[::1]|herald.example.com|*.example.org"},
		{[]string{"-addr", "[::1]:8000", "-allowed-hosts", "*"}, "localhost|127.0.0.1|[::1]|*"},
		{[]string{"-addr", "0.0.0.0:8000", "-api-insecure", "true"}, ""},
		{[]string{"-addr", "0.0.0.0:8000", "-api-insecure", "true", "-allowed-hosts", "herald.example.com"}, "herald.example.com"},
	} {
		cfg, err := Parse(tc.args, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		got := cfg.allowedHosts()
		if strings.Join(got, "|") != tc.want || (tc.want == "") != (got == nil) {
			t.Errorf("%v: allowed hosts %q, want %q", tc.args, got, tc.want)
		}
	}
	if _, err := Parse([]string{"-allowed-hosts", "a[b"}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "HERALD_ALLOWED_HOSTS") {
		t.Errorf("bad host pattern: %v", err)
	}
}

func TestAPIExposure(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		want    string // in the description, or in the error when refused
		refused bool
	}{
		{map[string]string{}, "open, on loopback only", false},
		{map[string]string{"HERALD_ADDR": "[::1]:8000"}, "open, on loopback only", false},
		{map[string]string{"HERALD_ADDR": "localhost:8000"}, "open, on loopback only", false},
		{map[string]string{"HERALD_ADDR": "0.0.0.0:8000", "HERALD_API_TOKEN": "t"}, "protected by HERALD_API_TOKEN", false},
		{map[string]string{"HERALD_ADDR": "0.0.0.0:8000", "HERALD_API_INSECURE": "true"}, "OPEN to the network", false},
		{map[string]string{"HERALD_ADDR": "0.0.0.0:8000"}, "HERALD_API_INSECURE=true", true},
		{map[string]string{"HERALD_ADDR": ":8000"}, "HERALD_API_TOKEN", true},
		{map[string]string{"HERALD_ADDR": "[::]:8000"}, "HERALD_API_TOKEN", true},
		{map[string]string{"HERALD_ADDR": "192.168.1.5:8000"}, "HERALD_API_TOKEN", true},
		{map[string]string{"HERALD_ADDR": "herald.lan:8000"}, "HERALD_API_TOKEN", true},
	} {
		cfg, err := Parse(nil, func(k string) string { return tc.env[k] }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := cfg.checkAPIExposure()
		if tc.refused {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %q %v, want refused naming %s", tc.env, desc, err, tc.want)
			}
		} else if err != nil || !strings.Contains(desc, tc.want) {
			t.Errorf("%v: %q %v, want %q", tc.env, desc, err, tc.want)
		}
	}
}

func TestPlainHTTPSettings(t *testing.T) {
	cfg, err := Parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IdleTimeout != 120*time.Second || cfg.ReadTimeout != 30*time.Second || cfg.WriteTimeout != 30*time.Second ||
		cfg.MaxHTTPConnections != 5000 || cfg.MaxHTTPConnectionsPerAddr != 256 || cfg.MetricsAddr != "" {
		t.Errorf("defaults: idle %v read %v write %v max %d per addr %d metrics %q", cfg.IdleTimeout, cfg.ReadTimeout,
			cfg.WriteTimeout, cfg.MaxHTTPConnections, cfg.MaxHTTPConnectionsPerAddr, cfg.MetricsAddr)
	}
	// The whole request cannot have less time than its headers.
	_, err = Parse([]string{"-read-timeout", "5s"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HERALD_HANDSHAKE_TIMEOUT") {
		t.Errorf("-read-timeout 5s with the 10s handshake timeout: %v", err)
	}
	for _, args := range [][]string{{"-metrics-addr", "9100"}, {"-max-http-connections", "0"}, {"-idle-timeout", "0"}} {
		if _, err := Parse(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestBridgesSetting(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "HERALD_BRIDGES" {
				return v
			}
			return ""
		}
	}
	cfg, err := Parse(nil, env("orders:orders:order.created,shop.refunds:refunds:refund.issued:id+customer=customer_id"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.bridges) != 2 || cfg.bridges[1].Fields["customer"] != "customer_id" {
		t.Fatalf("bridges %+v", cfg.bridges)
	}
	for _, bad := range []string{"posts:gossip:name.gossip", "orders", "Orders:o:t", "orders;drop:o:t", "o:o:t,o:p:t"} {
		if _, err := Parse(nil, env(bad), io.Discard); err == nil || !strings.Contains(err.Error(), "HERALD_BRIDGES") {
			t.Errorf("HERALD_BRIDGES=%s: %v, want an error naming the setting", bad, err)
		}
	}
}
