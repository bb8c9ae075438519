package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFlagBeatsEnvironment(t *testing.T) {
	env := map[string]string{"HERALD_ADDR": "127.0.0.1:9000", "HERALD_QUEUE_BYTES": "65536"}
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:9100"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9100" || cfg.QueueBytes != 65536 {
		t.Fatalf("addr %s queue %d", cfg.Addr, cfg.QueueBytes)
	}
	cfg, err = parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:8000" || cfg.redisOpts != nil || cfg.pgConfig != nil || cfg.QueueBytes != 1<<20 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestWriteDelay(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 10 * time.Millisecond, "0": 0, "25ms": 25 * time.Millisecond} {
		cfg, err := parseConfig(nil, func(k string) string { return map[string]string{"HERALD_WRITE_DELAY": v}[k] }, io.Discard)
		if err != nil || cfg.WriteDelay != want {
			t.Errorf("HERALD_WRITE_DELAY=%q: %v, %v; want %v", v, cfg.WriteDelay, err, want)
		}
	}
	for _, v := range []string{"-1ms", "2s", "soon"} {
		if _, err := parseConfig([]string{"-write-delay", v}, func(string) string { return "" }, io.Discard); err == nil {
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
		cfg, err := parseConfig(argv, func(string) string { return "" }, io.Discard)
		if err != nil || cfg.Compression != want {
			t.Errorf("-compression=%q: %v, %v; want %v", args, cfg.Compression, err, want)
		}
	}
	if _, err := parseConfig([]string{"-compression", "sometimes"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Error("-compression sometimes accepted")
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	if _, err := parseConfig([]string{"-help"}, func(string) string { return "" }, &out); err != errHelp {
		t.Fatalf("err %v, want errHelp", err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), "-"+s.flag) || !strings.Contains(out.String(), "$"+s.env) {
			t.Errorf("--help does not document -%s / $%s", s.flag, s.env)
		}
	}
}

func TestAllowedOrigins(t *testing.T) {
	cfg, err := parseConfig([]string{"-allowed-origins", "https://app.example.com, *.example.org,"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.AllowedOrigins, "|") != "app.example.com|*.example.org" {
		t.Fatalf("origins %q", cfg.AllowedOrigins)
	}
}

// TestReadmeDocumentsEverySetting keeps README's settings tables in step
// with the settings the server reads.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for line := range strings.SplitSeq(string(readme), "\n") {
		if strings.HasPrefix(line, "| `-") {
			flag := strings.Trim(strings.Split(line, "|")[1], " `")
			rows[flag] = line
		}
	}
	for _, s := range settings {
		row, ok := rows["-"+s.flag]
		if !ok {
			t.Errorf("README has no row for -%s", s.flag)
			continue
		}
		if !strings.Contains(row, "`"+s.env+"`") {
			t.Errorf("README row for -%s does not name %s", s.flag, s.env)
		}
		if s.def != "" && !strings.Contains(row, "`"+s.def+"`") {
			t.Errorf("README row for -%s does not give the default %s", s.flag, s.def)
		}
		delete(rows, "-"+s.flag)
	}
	for flag := range rows {
		t.Errorf("README documents %s, which the server does not read", flag)
	}
}

// TestRetiredSettingStops: a deployment that still sets a setting that is no
// longer read must not run silently on the new one's default.
func TestRetiredSettingStops(t *testing.T) {
	env := map[string]string{"HERALD_QUEUE_SIZE": "512"}
	_, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HERALD_QUEUE_BYTES") {
		t.Fatalf("HERALD_QUEUE_SIZE set: %v, want an error naming HERALD_QUEUE_BYTES", err)
	}
}

func TestPlainHTTPSettings(t *testing.T) {
	cfg, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IdleTimeout != 120*time.Second || cfg.ReadTimeout != 30*time.Second || cfg.WriteTimeout != 30*time.Second ||
		cfg.MaxHTTPConnections != 5000 || cfg.MaxHTTPConnectionsPerAddr != 256 || cfg.MetricsAddr != "" {
		t.Errorf("defaults: idle %v read %v write %v max %d per addr %d metrics %q", cfg.IdleTimeout, cfg.ReadTimeout,
			cfg.WriteTimeout, cfg.MaxHTTPConnections, cfg.MaxHTTPConnectionsPerAddr, cfg.MetricsAddr)
	}
	// The whole request cannot have less time than its headers.
	_, err = parseConfig([]string{"-read-timeout", "5s"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "HERALD_HANDSHAKE_TIMEOUT") {
		t.Errorf("-read-timeout 5s with the 10s handshake timeout: %v", err)
	}
	for _, args := range [][]string{{"-metrics-addr", "9100"}, {"-max-http-connections", "0"}, {"-idle-timeout", "0"}} {
		if _, err := parseConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
