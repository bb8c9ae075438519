package keyrate

import (
	"fmt"
	"testing"
	"time"
)

func TestBucketsPerKeyAndEviction(t *testing.T) {
	l := New(1, 2, 100)
	now := time.Unix(1000, 0)
	for i := 0; i < 2; i++ {
		if ok, _ := l.AllowAt("a", now); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	ok, wait := l.AllowAt("a", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("past the burst: %v %v, want refused with a wait up to 1s", ok, wait)
	}
	if ok, _ := l.AllowAt("b", now); !ok {
		t.Fatal("another key refused")
	}
	// A refused request takes nothing: after a second one token is back.
	if ok, _ := l.AllowAt("a", now.Add(time.Second)); !ok {
		t.Fatal("no token back after a second")
	}
	for i := 0; i < 50; i++ {
		l.AllowAt(fmt.Sprint("k", i), now.Add(time.Second))
	}
	if n := l.Len(); n != 51 { // "b" refilled and was swept
		t.Fatalf("%d keys, want 51", n)
	}
	// Two seconds later every bucket is full again and is dropped.
	l.AllowAt("c", now.Add(4*time.Second))
	if n := l.Len(); n != 1 {
		t.Fatalf("%d keys after they all refilled, want 1", n)
	}
}

func TestOverflowShared(t *testing.T) {
	l := New(0.001, 1, 3)
	now := time.Unix(1000, 0)
	allowed := 0
	for i := 0; i < 10; i++ {
		if ok, _ := l.AllowAt(fmt.Sprint(i), now); ok {
			allowed++
		}
	}
	if allowed != 4 || l.Len() != 3 {
		t.Fatalf("%d allowed, %d keys: want 3 own buckets and 1 shared", allowed, l.Len())
	}
}
