package server

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestLogMasksURLPasswords: a URL's password in a log message, a string
// attribute or an error is printed as xxxxx, in both log formats.
func TestLogMasksURLPasswords(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var out strings.Builder
		log := newLogger(&Config{LogFormat: format, LogLevel: slog.LevelDebug}, &out)
		base := errors.New("dial redis://herald:s3cret@10.0.0.1:6379/0 failed")
		err := fmt.Errorf("layer: %w", base)
		log.Warn("connecting to postgres://app:s3cret@db/app", "url", "rediss://:s3cret@cache:6380", "err", err)
		if strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "xxxxx") {
			t.Errorf("%s log: %s", format, out.String())
		}
		if !strings.Contains(out.String(), "herald:xxxxx@10.0.0.1:6379") {
			t.Errorf("%s log lost the rest of the URL: %s", format, out.String())
		}
	}
	if got := MaskURLs("redis://127.0.0.1:6379/0 and http://host:80/p"); got != "redis://127.0.0.1:6379/0 and http://host:80/p" {
		t.Errorf("a URL without a password was changed: %s", got)
	}
}
