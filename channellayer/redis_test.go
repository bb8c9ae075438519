package channellayer_test

import (
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

func redisClient(t *testing.T) *redis.Client { return layertest.RedisClient(t) }

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

func TestRedisGroupLimit(t *testing.T) {
	l, err := channellayer.NewRedis(redisClient(t), channellayer.RedisConfig{Prefix: layertest.Prefix(t), MaxGroups: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	layertest.GroupLimit(t, l, 3)
}
