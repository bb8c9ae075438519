// Command herald is the Herald notification server. It reads its
// settings, runs the server that package server wires until SIGINT or
// SIGTERM, and then drains: clients are told to reconnect elsewhere
// (close 1012) before the process exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald/cmd/herald/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald:", server.MaskURLs(err.Error()))
		os.Exit(2)
	}
}

// run serves until ctx ends. listening, if not nil, is called with the
// address once the server accepts connections.
func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer, listening func(addr string)) error {
	cfg, err := server.Parse(args, getenv, out)
	if err != nil {
		return err
	}
	return server.Run(ctx, cfg, out, listening)
}
