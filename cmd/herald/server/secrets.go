package server

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// Secrets stay out of what Herald prints: the errors of settings, which
// may quote a URL with its password, and every log line.

// masked replaces a password.
const masked = "xxxxx"

// secretSettings are the settings whose whole value is a secret.
var secretSettings = map[string]bool{
	"HERALD_API_TOKEN":           true,
	"HERALD_JWT_SECRET":          true,
	"HERALD_CHANNELS_REDIS_KEYS": true,
}

// urlPassword matches the "user:password@" of a URL.
var urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)[^\s@]+@`)

// MaskURLs returns s with the password of every URL in it replaced by
// xxxxx, as in redis://user:xxxxx@host:6379/0.
func MaskURLs(s string) string {
	return urlPassword.ReplaceAllString(s, "${1}"+masked+"@")
}

// userinfoPassword returns the password of a URL given as v, read by
// hand so that a URL too broken for url.Parse gives it too: what lies
// between the first ':' after "scheme://" and the last '@' before the
// path.
func userinfoPassword(v string) string {
	_, rest, ok := strings.Cut(v, "://")
	if !ok {
		rest = v
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	if !ok {
		return ""
	}
	return pw
}

// redact returns msg, the error of setting env whose value is v, with
// v's secrets replaced: the whole value for a secret setting, and
// otherwise any password of a URL in it (for REDIS_URL, DATABASE_URL,
// REDIS_CLUSTER_ADDRS), raw and unescaped.
func redact(msg, env, v string) string {
	var secrets []string
	if secretSettings[env] {
		secrets = append(secrets, v)
		for p := range strings.SplitSeq(v, ",") {
			secrets = append(secrets, strings.TrimSpace(p))
		}
	}
	for p := range strings.SplitSeq(v, ",") {
		if pw := userinfoPassword(strings.TrimSpace(p)); pw != "" {
			secrets = append(secrets, pw)
			if u, err := url.PathUnescape(pw); err == nil {
				secrets = append(secrets, u)
			}
			if u, err := url.QueryUnescape(pw); err == nil {
				secrets = append(secrets, u)
			}
		}
	}
	for _, s := range secrets {
		if len(s) > 0 {
			msg = strings.ReplaceAll(msg, s, masked)
		}
	}
	return MaskURLs(msg)
}

// maskAttr is the loggers' ReplaceAttr: passwords in URLs of the message
// and of every string or error attribute are masked.
func maskAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); strings.Contains(s, "://") {
			a.Value = slog.StringValue(MaskURLs(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && err != nil {
			if s := err.Error(); strings.Contains(s, "://") {
				a.Value = slog.AnyValue(maskedError{s: MaskURLs(s), err: err})
			}
		}
	}
	return a
}

// maskedError is an error logged with its text masked; errors.Is still
// sees the original.
type maskedError struct {
	s   string
	err error
}

func (e maskedError) Error() string { return e.s }
func (e maskedError) Unwrap() error { return e.err }
