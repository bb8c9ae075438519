package consumer

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePositions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []position
	}{
		{"", nil},
		{"5-0", []position{{id: "5-0"}}},
		{"a:1-2", []position{{group: "a", id: "1-2"}}},
		{"5-0,orders.eu:17-3,b_2:0-1", []position{{id: "5-0"}, {group: "orders.eu", id: "17-3"}, {group: "b_2", id: "0-1"}}},
		{"a:1-2,5-0", []position{{group: "a", id: "1-2"}, {id: "5-0"}}},
	} {
		got, err := parsePositions(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parsePositions(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		",", "5-0,", ",5-0", "x", "a:", ":5-0", "a:b:5-0", "a:5", "5-0,6-0", "a:1-0,a:2-0",
		"a b:1-0", "a:1-0 ", "gossip:1-0;b:2-0", strings.Repeat("1-0,", maxPositions) + "1-0",
	} {
		if got, err := parsePositions(in); err == nil {
			t.Errorf("parsePositions(%q) = %v, want an error", in, got)
		}
	}
}

// FuzzParsePositions: positions come from clients (?since=,
// Last-Event-ID, the resume frame). What parses writes back the same,
// and holds nothing that could break an event stream's id line.
func FuzzParsePositions(f *testing.F) {
	for _, s := range []string{"", "5-0", "a:1-2,5-0", "gossip:1-0,orders:2-0,x.y:3-4", "a:1-0,a:2-0", "1-0,\n2-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := parsePositions(s)
		if err != nil {
			return
		}
		out := string(appendPositions(nil, ps))
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("%q formats as %q", s, out)
		}
		again, err := parsePositions(out)
		if err != nil || !slices.Equal(again, ps) {
			t.Fatalf("%q: %v formats as %q, which parses as %v, %v", s, ps, out, again, err)
		}
		if s != "" && out != s {
			t.Fatalf("%q formats back as %q", s, out)
		}
	})
}
