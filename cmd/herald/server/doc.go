// Package server is the Herald notification server as cmd/herald runs
// it, for every tool that runs the server (herald-bench serve profiles
// it in its own process).
//
// The settings table (config.go) is the one place the server's settings
// and their defaults are written: Parse reads them from flags and the
// environment (a flag wins), ParseFlags does the same beside a tool's own
// flags, and -help and README.md list the same table. Config carries the
// result, and Run passes every value to the parts explicitly, so the
// zero-value defaults of consumer.Server, the router and the layers never
// decide anything for the server; where a part exports its default, the
// table's default is that value.
//
// Run wires the channel layer, the consumers, the notifier (or the
// in-memory posts), the router and the HTTP servers, serves until its
// context ends, and then drains: it stops accepting, closes every
// WebSocket with 1012 (reconnect elsewhere) and returns once the
// connections are gone or the shutdown timeout passed. It sets the
// process's default slog logger and go-redis' logger to its own.
package server
