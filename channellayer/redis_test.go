package channellayer_test

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// redisClient returns a client for REDIS_URL, skipping the test when
// Redis is unreachable.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(layertest.RedisURL())
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		layertest.Unavailable(t, "Redis", err)
	}
	return c
}

func TestRedis(t *testing.T) {
	var mu sync.Mutex
	prefixes := map[*testing.T]string{}
	layertest.Run(t, func(t *testing.T) channellayer.Layer {
		mu.Lock()
		p, ok := prefixes[t]
		if !ok {
			p = layertest.Prefix(t)
			prefixes[t] = p
		}
		mu.Unlock()
		l, err := channellayer.NewRedis(redisClient(t), channellayer.RedisConfig{Prefix: p, History: layertest.History})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}
