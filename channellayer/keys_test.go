package channellayer

import (
	"strconv"
	"testing"
)

func TestKeyRecords(t *testing.T) {
	var r keyRecords
	calls := 0
	want := SendResult{ID: "3-0", Delivered: true}
	send := func() SendResult { calls++; return want }
	if n, repeated := r.apply("group g", "k", send); n != want || repeated {
		t.Fatalf("first apply: %+v, %v", n, repeated)
	}
	if n, repeated := r.apply("group g", "k", send); n != want || !repeated || calls != 1 {
		t.Fatalf("second apply: %+v, %v, %d sends; want the first result and no send", n, repeated, calls)
	}
	if _, repeated := r.apply("group h", "k", send); repeated {
		t.Fatal("a key is per destination")
	}
	// Past the bound, the oldest are forgotten first.
	for i := range maxKeyRecords {
		r.apply("group g", strconv.Itoa(i), func() SendResult { return SendResult{Delivered: true} })
	}
	if r.seen("group g", "k") {
		t.Error("the oldest key was kept past the bound")
	}
	if !r.seen("group g", strconv.Itoa(maxKeyRecords-1)) {
		t.Error("the newest key was forgotten")
	}
	if n := len(r.n); n > maxKeyRecords {
		t.Errorf("%d records kept, the bound is %d", n, maxKeyRecords)
	}
}
