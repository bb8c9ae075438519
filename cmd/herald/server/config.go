package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/cmd/internal/demo"
	"github.com/heraldhq/herald/notifier"
	"github.com/heraldhq/herald/router"
)

// Config is every setting of the server, as Parse reads it. Each comes
// from a flag or an environment variable; a flag given on the command
// line wins. Its default is the settings table's, which passes every
// value to the parts explicitly: their own zero-value defaults never
// apply to the server.
type Config struct {
	Addr            string
	RedisURL        string
	RedisPrefix     string
	DatabaseURL     string
	APIToken        string
	APIInsecure     bool // serve /api/ without a token off loopback
	AllowedOrigins  []string
	AllowedHosts    []string // HERALD_ALLOWED_HOSTS as given; see allowedHosts
	QueueBytes      int
	WriteDelay      time.Duration // 0: off
	Compression     bool
	History         []channellayer.HistoryPolicy
	HistoryMaxBytes int64 // in-memory layer only
	MaxReplay       int
	MaxFrame        int64
	ShutdownTimeout time.Duration
	LogFormat       string
	LogLevel        slog.Level

	PublicGroups          []string
	routes                []route // HERALD_ROUTES
	MaxConnections        int
	MaxConnectionsPerAddr int
	TrustedProxies        []netip.Prefix
	RateLimit             float64
	RateBurst             int
	IPv6Prefix            int
	HTTPRateLimit         float64 // 0: off
	HTTPRateBurst         int
	ReplayRate            float64 // 0: off
	ReplayBurst           int
	MaxGroups             int
	MaxInstanceGroups     int
	PingInterval          time.Duration
	PingTimeout           time.Duration
	HandshakeTimeout      time.Duration

	// Plain HTTP connections (not WebSockets or event streams).
	IdleTimeout               time.Duration
	ReadTimeout               time.Duration
	WriteTimeout              time.Duration
	MaxHTTPConnections        int
	MaxHTTPConnectionsPerAddr int
	MetricsAddr               string // "": /metrics on Addr, behind APIToken

	tokens                 *router.Tokens
	jwtIssuer, jwtAudience string
	jwtMaxLifetime         time.Duration

	redisOpts    *redis.Options
	redisCluster *redis.ClusterOptions // REDIS_CLUSTER_ADDRS
	pgConfig     *pgxpool.Config
	bridges      []notifier.Bridge // HERALD_BRIDGES, besides the posts bridge

	channelsRedis channelsRedisConfig // HERALD_CHANNELS_REDIS*
}

// setting is one entry of the settings table, shared by the flag set,
// the environment and --help.
type setting struct {
	flag, env, def, usage string
	parse                 func(c *Config, v string) error
}

var settings = []setting{
	{"addr", "HERALD_ADDR", "127.0.0.1:8000", "address to listen on (host:port)", func(c *Config, v string) error {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			return fmt.Errorf("%q is not host:port", v)
		}
		c.Addr = v
		return nil
	}},
	{"redis-url", "REDIS_URL", "", "Redis URL for the shared channel layer, e.g. redis://127.0.0.1:6379/0 (empty: in-memory layer, one instance)", func(c *Config, v string) error {
		if v == "" {
			return nil
		}
		opts, err := redis.ParseURL(v)
		if err != nil {
			return err
		}
		// Fail fast while Redis is down, so API callers get a quick 503
		// rather than waiting out go-redis' retries; the layer reconnects
		// on its own.
		if opts.DialerRetries == 0 {
			opts.DialerRetries = 1
		}
		c.RedisURL, c.redisOpts = v, opts
		return nil
	}},
	{"redis-prefix", "HERALD_REDIS_PREFIX", "herald", "prefix of every Redis channel and key Herald uses; deployments sharing one Redis must each set their own", func(c *Config, v string) error {
		if err := channellayer.ValidGroupName(v); err != nil {
			return err
		}
		c.RedisPrefix = v
		return nil
	}},
	{"database-url", "DATABASE_URL", "", "Postgres URL; posts are stored there and every insert is delivered (empty: posts kept in memory)", func(c *Config, v string) error {
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
	{"api-token", "HERALD_API_TOKEN", "", "token that /api/ requests must present as 'Authorization: Bearer <token>' (empty: /api/ is open, which on an address that is not loopback needs HERALD_API_INSECURE=true)", func(c *Config, v string) error {
		c.APIToken = v
		return nil
	}},
	{"api-insecure", "HERALD_API_INSECURE", "false", "serve /api/ without HERALD_API_TOKEN on an address that is not loopback, open to anyone who can reach it; without it such a server refuses to start", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.APIInsecure = b
		return nil
	}},
	{"allowed-hosts", "HERALD_ALLOWED_HOSTS", "", "comma-separated Host patterns (path.Match syntax, any port unless one is given, e.g. 'herald.example.com,*.example.org') that requests must name; others get 421. Bound to loopback, localhost, 127.0.0.1 and [::1] are always allowed and nothing else unless listed ('*': any) (unset: any Host, or on loopback only those)", func(c *Config, v string) error {
		c.AllowedHosts = nil
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if !router.ValidHostPattern(p) {
				return fmt.Errorf("%q is not a host pattern such as herald.example.com or *.example.com", p)
			}
			c.AllowedHosts = append(c.AllowedHosts, p)
		}
		return nil
	}},
	{"allowed-origins", "HERALD_ALLOWED_ORIGINS", "", "comma-separated host patterns (path.Match syntax, e.g. 'app.example.com,*.example.org') whose pages may open WebSockets, besides this server's own host", func(c *Config, v string) error {
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
	{"history", "HERALD_HISTORY", demo.Group + ":1000:1h", "groups that keep a history for clients that resume: pattern:size[:age], comma-separated (empty: none)", func(c *Config, v string) error {
		h, err := channellayer.ParseHistory(v)
		if err != nil {
			return err
		}
		c.History = h
		return nil
	}},
	{"history-max-bytes", "HERALD_HISTORY_MAX_BYTES", strconv.Itoa(channellayer.DefaultHistoryMaxBytes), "bytes the in-memory layer's histories may hold together (messages plus about 160 bytes each); past it the oldest messages of any group are dropped first, and clients resuming from them resync. Redis layers keep history in Redis, bounded by its maxmemory", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 4096 {
			return fmt.Errorf("%q is not a whole number of bytes of at least 4096", v)
		}
		c.HistoryMaxBytes = n
		return nil
	}},
	{"max-replay", "HERALD_MAX_REPLAY", "10000", "most messages replayed to one resuming client; one that missed more, or more than half of -queue-bytes of them, is told to resync", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a whole number above 0", v)
		}
		c.MaxReplay = n
		return nil
	}},
	{"write-delay", "HERALD_WRITE_DELAY", "10ms", "how long frames for a busy client wait to share one write (0: never wait)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Second {
			return fmt.Errorf("%q is not a duration from 0 to 1s, such as 10ms", v)
		}
		c.WriteDelay = d
		return nil
	}},
	{"compression", "HERALD_COMPRESSION", "false", "offer WebSocket clients permessage-deflate without context takeover (messages of 512 bytes or more, each compressed once)", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.Compression = b
		return nil
	}},
	{"queue-bytes", "HERALD_QUEUE_BYTES", "1048576", "bytes that may wait for one client before it is closed as too slow (4008); a burst it drains in time never closes it", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4096 {
			return fmt.Errorf("%q is not a whole number of bytes of at least 4096", v)
		}
		c.QueueBytes = n
		return nil
	}},
	{"max-frame", "HERALD_MAX_FRAME", "65536", "largest client frame and API body in bytes", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 256 {
			return fmt.Errorf("%q is not a whole number of at least 256", v)
		}
		c.MaxFrame = n
		return nil
	}},
	{"shutdown-timeout", "HERALD_SHUTDOWN_TIMEOUT", "10s", "how long a stopping instance waits for its connections to close", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 10s", v)
		}
		c.ShutdownTimeout = d
		return nil
	}},
	{"log-format", "HERALD_LOG_FORMAT", "text", "log format: text or json", func(c *Config, v string) error {
		if v != "text" && v != "json" {
			return fmt.Errorf("%q is neither text nor json", v)
		}
		c.LogFormat = v
		return nil
	}},
	{"log-level", "HERALD_LOG_LEVEL", "info", "log level: debug, info, warn or error", func(c *Config, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
	{"bridges", "HERALD_BRIDGES", "", "more tables to deliver besides posts, with DATABASE_URL: comma-separated table:group:type[:fields], fields being '+'-separated field=column or column (default every column), e.g. 'orders:orders:order.created:id+total+customer=customer_id'", func(c *Config, v string) error {
		b, err := notifier.ParseBridges(v)
		if err != nil {
			return err
		}
		for _, br := range b {
			if br.Table == "posts" {
				return errors.New("posts is always bridged, to group gossip; list other tables")
			}
		}
		c.bridges = b
		return nil
	}},
	{"channels-redis", "HERALD_CHANNELS_REDIS", "", "speak Django Channels' channels_redis format on REDIS_URL, so Django and Herald share groups: core (RedisChannelLayer) or pubsub (RedisPubSubChannelLayer); see docs/DJANGO.md (empty: Herald's own format)", parseChannelsRedisMode},
	{"channels-redis-prefix", "HERALD_CHANNELS_REDIS_PREFIX", "asgi", "channels_redis \"prefix\", as in Django's CHANNEL_LAYERS", func(c *Config, v string) error {
		if v == "" || strings.ContainsAny(v, " \r\n*?[]\\") {
			return fmt.Errorf("%q is empty or holds white space or a glob character", v)
		}
		c.channelsRedis.Prefix = v
		return nil
	}},
	{"channels-redis-keys", "HERALD_CHANNELS_REDIS_KEYS", "", "channels_redis \"symmetric_encryption_keys\", comma-separated, first one encrypts; prefer the environment variable to the flag (empty: no encryption)", parseChannelsRedisKeys},
	{"channels-redis-capacity", "HERALD_CHANNELS_REDIS_CAPACITY", "100", "channels_redis \"capacity\" (core): unread messages an inbox may hold", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a whole number above 0", v)
		}
		c.channelsRedis.Capacity = n
		return nil
	}},
	{"channels-redis-expiry", "HERALD_CHANNELS_REDIS_EXPIRY", "60", "channels_redis \"expiry\" (core), in seconds: how long an unread message lives", func(c *Config, v string) error {
		return parseWholeSeconds(&c.channelsRedis.Expiry)(c, v)
	}},
	{"channels-redis-group-expiry", "HERALD_CHANNELS_REDIS_GROUP_EXPIRY", "86400", "channels_redis \"group_expiry\" (core), in seconds", func(c *Config, v string) error {
		return parseWholeSeconds(&c.channelsRedis.GroupExpiry)(c, v)
	}},
	{"redis-cluster-addrs", "REDIS_CLUSTER_ADDRS", "", "comma-separated host:port of Redis Cluster (7+) masters, instead of REDIS_URL: groups then use sharded pub/sub, each through the master owning its slot", func(c *Config, v string) error {
		if v == "" {
			return nil
		}
		if c.redisOpts != nil {
			return errors.New("set either this or REDIS_URL, not both")
		}
		var addrs []string
		for a := range strings.SplitSeq(v, ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				return fmt.Errorf("%q is not host:port", a)
			}
			addrs = append(addrs, a)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("%q names no address", v)
		}
		c.redisCluster = &redis.ClusterOptions{Addrs: addrs}
		return nil
	}},
	{"jwt-secret", "HERALD_JWT_SECRET", "", "HS256 secret (at least 32 bytes) that WebSocket clients' tokens must be signed with; set this or -jwt-public-key to require tokens (empty: no tokens)", func(c *Config, v string) error {
		if v == "" {
			return nil
		}
		t, err := router.NewHMACTokens([]byte(v))
		c.tokens = t
		return err
	}},
	{"jwt-public-key", "HERALD_JWT_PUBLIC_KEY", "", "path of a PEM public key (RSA for RS256, ECDSA P-256 for ES256) that verifies clients' tokens", func(c *Config, v string) error {
		if v == "" {
			return nil
		}
		if c.tokens != nil {
			return errors.New("set either HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY, not both")
		}
		pemData, err := os.ReadFile(v)
		if err != nil {
			return err
		}
		c.tokens, err = router.NewPublicKeyTokens(pemData)
		return err
	}},
	{"jwt-issuer", "HERALD_JWT_ISSUER", "", "when set, tokens' \"iss\" must equal it", func(c *Config, v string) error {
		c.jwtIssuer = v
		return nil
	}},
	{"jwt-audience", "HERALD_JWT_AUDIENCE", "", "when set, tokens' \"aud\" must include it", func(c *Config, v string) error {
		c.jwtAudience = v
		return nil
	}},
	{"jwt-max-lifetime", "HERALD_JWT_MAX_LIFETIME", "", "when set (a duration such as 24h), tokens must carry \"iat\" and \"exp\" - \"iat\" may not exceed it; others get 401 (empty: any lifetime)", func(c *Config, v string) error {
		if v == "" {
			c.jwtMaxLifetime = 0
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 24h", v)
		}
		c.jwtMaxLifetime = d
		return nil
	}},
	{"public-groups", "HERALD_PUBLIC_GROUPS", demo.Group, "comma-separated group patterns any client may join without a token's say-so", func(c *Config, v string) error {
		c.PublicGroups = []string{}
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				if _, err := path.Match(p, ""); err != nil {
					return fmt.Errorf("pattern %q: %w", p, err)
				}
				c.PublicGroups = append(c.PublicGroups, p)
			}
		}
		return nil
	}},
	{"routes", "HERALD_ROUTES", defaultRoutes, "WebSocket and event-stream routes, ';'-separated: a path, then join= (groups joined at connect), subscribe= (group patterns a client may ask for, within HERALD_PUBLIC_GROUPS and its token; default any) and types= (message type patterns forwarded; default *), e.g. '/notifications/ join=gossip types=name.gossip; /events/ types=*'", func(c *Config, v string) (err error) {
		c.routes, err = parseRoutes(v)
		return err
	}},
	{"max-connections", "HERALD_MAX_CONNECTIONS", "10000", "open WebSockets one instance accepts; more get 503", positiveInt(func(c *Config) *int { return &c.MaxConnections })},
	{"max-connections-per-addr", "HERALD_MAX_CONNECTIONS_PER_ADDR", "100", "open WebSockets from one client address; more get 429", positiveInt(func(c *Config) *int { return &c.MaxConnectionsPerAddr })},
	{"trusted-proxies", "HERALD_TRUSTED_PROXIES", "", "comma-separated addresses or CIDRs of proxies whose X-Forwarded-For is believed (empty: none)", func(c *Config, v string) error {
		c.TrustedProxies = nil
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if !strings.Contains(p, "/") {
				a, err := netip.ParseAddr(p)
				if err != nil {
					return err
				}
				p = netip.PrefixFrom(a, a.BitLen()).String()
			}
			prefix, err := netip.ParsePrefix(p)
			if err != nil {
				return err
			}
			c.TrustedProxies = append(c.TrustedProxies, prefix)
		}
		return nil
	}},
	{"ipv6-prefix", "HERALD_IPV6_PREFIX", strconv.Itoa(router.DefaultIPv6Prefix), "leading bits of an IPv6 client address that name one client for per-address limits (32 to 128; IPv4 addresses are always whole)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 32 || n > 128 {
			return fmt.Errorf("%q is not a whole number from 32 to 128", v)
		}
		c.IPv6Prefix = n
		return nil
	}},
	{"http-rate-limit", "HERALD_HTTP_RATE_LIMIT", "50", "requests per second one client address may make to /api/ and POST /posts; more get 429 with Retry-After; requests with HERALD_API_TOKEN are not limited (0: off)", nonNegativeFloat(func(c *Config) *float64 { return &c.HTTPRateLimit })},
	{"http-rate-burst", "HERALD_HTTP_RATE_BURST", "100", "requests one client address may make at once above -http-rate-limit", positiveInt(func(c *Config) *int { return &c.HTTPRateBurst })},
	{"replay-rate", "HERALD_REPLAY_RATE", "2", "replays (connects with since= or Last-Event-ID, resume frames, subscribes with since) per second one client address may ask for; more get 429 at connect, an error frame after (0: off)", nonNegativeFloat(func(c *Config) *float64 { return &c.ReplayRate })},
	{"replay-burst", "HERALD_REPLAY_BURST", "20", "replays one client address may ask for at once above -replay-rate", positiveInt(func(c *Config) *int { return &c.ReplayBurst })},
	{"rate-limit", "HERALD_RATE_LIMIT", "20", "frames per second a client may send on average; faster closes it with 1008", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("%q is not a positive number", v)
		}
		c.RateLimit = f
		return nil
	}},
	{"rate-burst", "HERALD_RATE_BURST", "40", "frames a client may send at once above the rate", positiveInt(func(c *Config) *int { return &c.RateBurst })},
	{"max-groups", "HERALD_MAX_GROUPS", "100", "groups one connection may be in", positiveInt(func(c *Config) *int { return &c.MaxGroups })},
	{"max-instance-groups", "HERALD_MAX_INSTANCE_GROUPS", "100000", "distinct groups one instance holds at once (each a Redis subscription); a subscribe that would create one more is refused with an error frame. API sends are not limited", positiveInt(func(c *Config) *int { return &c.MaxInstanceGroups })},
	{"ping-interval", "HERALD_PING_INTERVAL", "25s", "how often a quiet connection is pinged", positiveDuration(func(c *Config) *time.Duration { return &c.PingInterval })},
	{"ping-timeout", "HERALD_PING_TIMEOUT", "10s", "how long a ping may go unanswered before the connection is dropped", positiveDuration(func(c *Config) *time.Duration { return &c.PingTimeout })},
	{"handshake-timeout", "HERALD_HANDSHAKE_TIMEOUT", "10s", "how long a client may take to send its request headers, from their first byte", positiveDuration(func(c *Config) *time.Duration { return &c.HandshakeTimeout })},
	{"idle-timeout", "HERALD_IDLE_TIMEOUT", "120s", "how long a kept-alive HTTP connection may wait for the first bytes of its next request before it is closed", positiveDuration(func(c *Config) *time.Duration { return &c.IdleTimeout })},
	{"read-timeout", "HERALD_READ_TIMEOUT", "30s", "how long a client may take to send a whole plain HTTP request, headers and body, from its first byte (at least -handshake-timeout); a body not in by then gets 408 and the connection is closed, and a request still being handled is cancelled. WebSockets and event streams are not bound by it", positiveDuration(func(c *Config) *time.Duration { return &c.ReadTimeout })},
	{"write-timeout", "HERALD_WRITE_TIMEOUT", "30s", "how long a plain HTTP request may take from the end of its headers to the last byte of its answer; WebSockets and event streams bound each write themselves", positiveDuration(func(c *Config) *time.Duration { return &c.WriteTimeout })},
	{"max-http-connections", "HERALD_MAX_HTTP_CONNECTIONS", "5000", "open plain HTTP connections (requests and idle keep-alives, not WebSockets or event streams) one instance accepts; more are answered 503 and closed at once", positiveInt(func(c *Config) *int { return &c.MaxHTTPConnections })},
	{"max-http-connections-per-addr", "HERALD_MAX_HTTP_CONNECTIONS_PER_ADDR", "256", "open plain HTTP connections from one TCP peer address (trusted proxies exempt); more are answered 429 and closed at once", positiveInt(func(c *Config) *int { return &c.MaxHTTPConnectionsPerAddr })},
	{"metrics-addr", "HERALD_METRICS_ADDR", "", "separate address (host:port) to serve /metrics on, without a token, instead of the main one (empty: /metrics on -addr, behind -api-token when that is set)", func(c *Config, v string) error {
		if v == "" {
			c.MetricsAddr = ""
			return nil
		}
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			return fmt.Errorf("%q is not host:port", v)
		}
		c.MetricsAddr = v
		return nil
	}},
}

// allowedHosts returns the Host patterns the router answers for, nil for
// any: on a loopback address the loopback names and the listed ones,
// elsewhere the listed ones, if any.
func (c *Config) allowedHosts() []string {
	if router.IsLoopbackAddr(c.Addr) {
		return append(slices.Clone(router.LoopbackHosts), c.AllowedHosts...)
	}
	if len(c.AllowedHosts) == 0 {
		return nil
	}
	return c.AllowedHosts
}

// checkAPIExposure refuses an open API (no HERALD_API_TOKEN) on an
// address others can reach, unless HERALD_API_INSECURE says it is meant
// to be, and describes the API's protection for the start-up log.
func (c *Config) checkAPIExposure() (string, error) {
	switch {
	case c.APIToken != "":
		return "protected by HERALD_API_TOKEN", nil
	case router.IsLoopbackAddr(c.Addr):
		return "open, on loopback only (no HERALD_API_TOKEN)", nil
	case c.APIInsecure:
		return "OPEN to the network: no HERALD_API_TOKEN, HERALD_API_INSECURE=true", nil
	}
	return "", fmt.Errorf("HERALD_ADDR %s is not a loopback address and HERALD_API_TOKEN is empty: "+
		"anyone who can reach it could send to every group through /api/. "+
		"Set HERALD_API_TOKEN, bind to 127.0.0.1, or set HERALD_API_INSECURE=true to serve the API open", c.Addr)
}

func positiveInt(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a whole number above 0", v)
		}
		*field(c) = n
		return nil
	}
}

func nonNegativeFloat(field func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1e9 {
			return fmt.Errorf("%q is not a number of 0 or more (0 turns it off)", v)
		}
		*field(c) = f
		return nil
	}
}

func positiveDuration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 10s", v)
		}
		*field(c) = d
		return nil
	}
}

// retired maps environment variables that earlier versions read to the
// settings that replaced them: a deployment that still sets one stops at
// start instead of silently running with the new setting's default.
var retired = map[string]string{
	"HERALD_QUEUE_SIZE": "HERALD_QUEUE_BYTES",
}

// settingError is a setting's error with the value's secrets masked in
// its text.
type settingError struct {
	msg string
	err error
}

func (e *settingError) Error() string { return e.msg }
func (e *settingError) Unwrap() error { return e.err }

// Parse reads the settings from args and getenv. An error names the
// setting at fault; -help prints the settings to out and returns
// flag.ErrHelp.
func Parse(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { usage(out) }
	return ParseFlags(fs, args, getenv)
}

// ParseFlags is Parse on fs, for a tool that runs the server with flags
// of its own besides the settings (herald-bench serve): every setting is
// defined on fs, with its default and usage, and fs parses args.
func ParseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, error) {
	values := make([]*string, len(settings))
	for i, s := range settings {
		values[i] = fs.String(s.flag, s.def, s.usage)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are flags such as -addr, see -help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	for old, now := range retired {
		if getenv(old) != "" {
			return nil, fmt.Errorf("setting $%s is no longer read: use $%s (see -help)", old, now)
		}
	}
	c := &Config{}
	for i, s := range settings {
		v, from := s.def, "default"
		if e := getenv(s.env); e != "" {
			v, from = e, "environment"
		}
		if given[s.flag] {
			v, from = *values[i], "flag"
		}
		if err := s.parse(c, v); err != nil {
			// The error may quote the value: its secrets are masked.
			return nil, &settingError{msg: redact(fmt.Sprintf("setting -%s / $%s (value from the %s): %v", s.flag, s.env, from, err), s.env, v), err: err}
		}
	}
	if c.ReadTimeout < c.HandshakeTimeout {
		// The whole request cannot be given less time than its headers.
		return nil, fmt.Errorf("setting -read-timeout / $HERALD_READ_TIMEOUT: %v is less than -handshake-timeout / $HERALD_HANDSHAKE_TIMEOUT (%v)", c.ReadTimeout, c.HandshakeTimeout)
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
	PrintSettings(out)
}

// PrintSettings writes every setting to out, with its environment
// variable, default and meaning, as -help shows them.
func PrintSettings(out io.Writer) {
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(out, "  -%s, $%s (default %s)\n      %s\n", s.flag, s.env, def, s.usage)
	}
}
