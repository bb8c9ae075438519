package server

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/channelsredis"
)

// channelsRedisConfig is the Django compatibility mode: with Mode set,
// the layer on REDIS_URL speaks channels_redis's format instead of
// Herald's own (see docs/DJANGO.md).
type channelsRedisConfig struct {
	Mode        string // "", "core" or "pubsub"
	Prefix      string
	Keys        []string
	Capacity    int
	Expiry      time.Duration
	GroupExpiry time.Duration
}

func parseChannelsRedisMode(c *Config, v string) error {
	switch v {
	case "", "core", "pubsub":
		c.channelsRedis.Mode = v
		return nil
	}
	return fmt.Errorf("%q is neither core nor pubsub (or empty: off)", v)
}

func parseChannelsRedisKeys(c *Config, v string) error {
	c.channelsRedis.Keys = nil
	for k := range strings.SplitSeq(v, ",") {
		if k = strings.TrimSpace(k); k != "" {
			c.channelsRedis.Keys = append(c.channelsRedis.Keys, k)
		}
	}
	return nil
}

func parseWholeSeconds(dst *time.Duration) func(c *Config, v string) error {
	return func(_ *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a whole number of seconds above 0", v)
		}
		*dst = time.Duration(n) * time.Second
		return nil
	}
}

// newChannelsRedisLayer opens the layer of the compatibility mode on
// client.
func newChannelsRedisLayer(cfg *Config, client *redis.Client, log *slog.Logger) (channellayer.Layer, string, error) {
	cr := cfg.channelsRedis
	if cr.Mode == "pubsub" {
		l, err := channelsredis.NewPubSub(client, channelsredis.PubSubConfig{Prefix: cr.Prefix, SymmetricEncryptionKeys: cr.Keys, Logger: log, MaxGroups: cfg.MaxInstanceGroups})
		if err != nil {
			return nil, "", fmt.Errorf("setting HERALD_CHANNELS_REDIS_PREFIX or _KEYS: %w", err)
		}
		return l, "channels_redis pubsub " + cfg.redisOpts.Addr + " prefix " + cr.Prefix, nil
	}
	l, err := channelsredis.NewCore(client, channelsredis.CoreConfig{
		Prefix:                  cr.Prefix,
		Expiry:                  cr.Expiry,
		GroupExpiry:             cr.GroupExpiry,
		Capacity:                cr.Capacity,
		SymmetricEncryptionKeys: cr.Keys,
		Logger:                  log,
		MaxGroups:               cfg.MaxInstanceGroups,
	})
	if err != nil {
		return nil, "", fmt.Errorf("setting HERALD_CHANNELS_REDIS_*: %w", err)
	}
	return l, "channels_redis core " + cfg.redisOpts.Addr + " prefix " + cr.Prefix, nil
}
