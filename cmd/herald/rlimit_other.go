//go:build !unix

package main

import "log/slog"

func warnFileLimit(*config, *slog.Logger) {}
