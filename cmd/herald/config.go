package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
)

// config is every setting of the server. Each comes from a flag or an
// environment variable; a flag given on the command line wins.
type config struct {
	Addr            string
	RedisURL        string
	RedisPrefix     string
	DatabaseURL     string
	APIToken        string
	AllowedOrigins  []string
	QueueSize       int
	MaxFrame        int64
	ShutdownTimeout time.Duration
	LogFormat       string
	LogLevel        slog.Level

	redisOpts *redis.Options
	pgConfig  *pgxpool.Config
}

// setting is one entry of the settings table, shared by the flag set,
// the environment and --help.
type setting struct {
	flag, env, def, usage string
	parse             func(c *config, v string) error
}

var settings = []setting{
	{"addr", "HERALD_ADDR", "127.0.0.1:8000", "address to listen on (host:port)", func(c *config, v string) error {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			return fmt.Errorf("%q is not host:port", v)
		}
		c.Addr = v
		return nil
	}},
	{"redis-url", "REDIS_URL", "", "Redis URL for the shared channel layer, e.g. redis://127.0.0.1:6379/0 (empty: in-memory layer, one instance)", func(c *config, v string) error {
		if v == "" {
			return nil
		}
		opts, err := redis.ParseURL(v)
		if err != nil {
			return err
		}
		c.RedisURL, c.redisOpts = v, opts
		return nil
	}},
	{"redis-prefix", "HERALD_REDIS_PREFIX", "herald", "prefix of every Redis channel Herald uses, so deployments can share a Redis", func(c *config, v string) error {
		if err := channellayer.ValidGroupName(v); err != nil {
			return err
		}
		c.RedisPrefix = v
		return nil
	}},
	{"database-url", "DATABASE_URL", "", "Postgres URL; posts are stored there and every insert is delivered (empty: posts kept in memory)", func(c *config, v string) error {
		if v == "" {
			return nil
		}
		cfg, err := pgxpool.ParseConfig(v)
		if err != nil {
			return errors.New(strings.ReplaceAll(err.Error(), v, "<url>"))
		}
		c.DatabaseURL, c.pgConfig = v, cfg
		return nil
	}},
	{"api-token", "HERALD_API_TOKEN", "", "token that /api/ requests must present as 'Authorization: Bearer <token>' (empty: /api/ is open)", func(c *config, v string) error {
		c.APIToken = v
		return nil
	}},
	{"allowed-origins", "HERALD_ALLOWED_ORIGINS", "", "comma-separated host patterns (path.Match syntax, e.g. 'app.example.com,*.example.org') whose pages may open WebSockets, besides this server's own host", func(c *config, v string) error {
		c.AllowedOrigins = nil
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if strings.Contains(p, "://") {
				if u, err := url.Parse(p); err == nil && u.Host != "" {
					p = u.Host
				}
			}
			c.AllowedOrigins = append(c.AllowedOrigins, p)
		}
		return nil
	}},
	{"queue-size", "HERALD_QUEUE_SIZE", "256", "messages that may wait for one client before it is closed as too slow (4008)", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a whole number above 0", v)
		}
		c.QueueSize = n
		return nil
	}},
	{"max-frame", "HERALD_MAX_FRAME", "65536", "largest client frame and API body in bytes", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 256 {
			return fmt.Errorf("%q is not a whole number of at least 256", v)
		}
		c.MaxFrame = n
		return nil
	}},
	{"shutdown-timeout", "HERALD_SHUTDOWN_TIMEOUT", "10s", "how long a stopping instance waits for its connections to close", func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 10s", v)
		}
		c.ShutdownTimeout = d
		return nil
	}},
	{"log-format", "HERALD_LOG_FORMAT", "text", "log format: text or json", func(c *config, v string) error {
		if v != "text" && v != "json" {
			return fmt.Errorf("%q is neither text nor json", v)
		}
		c.LogFormat = v
		return nil
	}},
	{"log-level", "HERALD_LOG_LEVEL", "info", "log level: debug, info, warn or error", func(c *config, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
}

// errHelp is returned when --help was asked for and printed.
var errHelp = flag.ErrHelp

// parseConfig reads the settings from args and getenv. An error names the
// setting at fault.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (*config, error) {
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(out)
	values := make([]*string, len(settings))
	for i, s := range settings {
		values[i] = fs.String(s.flag, "", "")
	}
	fs.Usage = func() { usage(out) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are flags such as -addr, see -help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	c := &config{}
	for i, s := range settings {
		v, from := s.def, "default"
		if e := getenv(s.env); e != "" {
			v, from = e, "environment"
		}
		if given[s.flag] {
			v, from = *values[i], "flag"
		}
		if err := s.parse(c, v); err != nil {
			return nil, fmt.Errorf("setting -%s / $%s (value from the %s): %w", s.flag, s.env, from, err)
		}
	}
	return c, nil
}

func usage(out io.Writer) {
	fmt.Fprint(out, `herald: a real-time notification server.

Browsers connect to ws://HOST/notifications/ and receive every new post;
backends publish with POST /api/groups/{group}/send. Open http://HOST/ for
the page.

Usage: herald [flags]

Every setting is a flag or an environment variable; a flag wins.

`)
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(out, "  -%s, $%s (default %s)\n      %s\n", s.flag, s.env, def, s.usage)
	}
}
