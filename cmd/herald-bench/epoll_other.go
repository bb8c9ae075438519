//go:build !linux

package main

import "errors"

// epollReader needs Linux's epoll; elsewhere the parent refuses
// -reader epoll before starting a child.
type epollReader struct{}

func newEpollReader(*child) (*epollReader, error) {
	return nil, errors.New("-reader epoll: Linux only")
}

func (*epollReader) add(int, *wsConn) {}

func (*epollReader) drop(int, bool) bool { return false }
