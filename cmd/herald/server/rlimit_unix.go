//go:build unix

package server

import (
	"log/slog"
	"syscall"
)

// warnFileLimit warns when the connection limits, at their fullest, would
// pass the process's open-file limit: then accept fails (EMFILE) for
// everyone before any limit refuses anybody.
func warnFileLimit(cfg *Config, log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	// Besides the connections: listeners, Redis and Postgres pools, logs.
	const reserve = 256
	need := uint64(cfg.MaxConnections) + uint64(cfg.MaxHTTPConnections) + reserve
	if lim.Cur < need {
		log.Warn("herald: the connection limits exceed the open-file limit; lower HERALD_MAX_CONNECTIONS or HERALD_MAX_HTTP_CONNECTIONS, or raise the limit",
			"max_connections", cfg.MaxConnections, "max_http_connections", cfg.MaxHTTPConnections, "open_file_limit", lim.Cur)
	}
}
