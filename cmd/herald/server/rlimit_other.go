//go:build !unix

package server

import "log/slog"

func warnFileLimit(*config, *slog.Logger) {}
