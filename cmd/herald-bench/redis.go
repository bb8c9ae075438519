package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
)

// openRedis returns Herald's Redis layer on the Redis at url, which must
// be a loopback address, and a function that closes both.
func openRedis(url string, cfg channellayer.RedisConfig) (*channellayer.Redis, func(), error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("redis url: %w", err)
	}
	if host, _, _ := net.SplitHostPort(opts.Addr); !isLoopback(host) {
		return nil, nil, fmt.Errorf("redis url: %q is not a loopback address", opts.Addr)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	client := redis.NewClient(opts)
	l, err := channellayer.NewRedis(client, cfg)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return l, func() { l.Close(); client.Close() }, nil
}
