package server

import (
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/consumer"
)

func TestParseRoutes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]consumer.Forwarder
	}{
		{defaultRoutes, map[string]consumer.Forwarder{
			"/notifications/": {Join: []string{"gossip"}, Types: []string{"name.gossip"}}}},
		{"/notifications/ join=gossip types=name.gossip; /events/ types=*", map[string]consumer.Forwarder{
			"/notifications/": {Join: []string{"gossip"}, Types: []string{"name.gossip"}},
			"/events/":        {Types: []string{"*"}}}},
		{"  /a/   join=x,y  subscribe=orders.*,team-?  types=order.*,name.gossip ;/b/", map[string]consumer.Forwarder{
			"/a/": {Join: []string{"x", "y"}, Subscribe: []string{"orders.*", "team-?"}, Types: []string{"order.*", "name.gossip"}},
			"/b/": {}}},
		{"/rooms/{room}/ subscribe=room.*", map[string]consumer.Forwarder{
			"/rooms/{room}/": {Subscribe: []string{"room.*"}}}},
	} {
		routes, err := parseRoutes(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := map[string]consumer.Forwarder{}
		for _, r := range routes {
			if r.new == nil {
				t.Errorf("%q: route %s has no consumer", tc.in, r.path)
			}
			got[r.path] = r.fwd
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseRoutesRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no route"},
		{"   ", "no route"},
		{"/a/;", "route 2 is empty"},
		{"notifications/", "must start with /"},
		{"/a/ typs=x", `unknown field "typs=x"`},
		{"/a/ types", "types needs a value"},
		{"/a/ types=", "types needs a value"},
		{"/a/ types=a,,b", "empty entry"},
		{"/a/ types=a types=b", "types is given twice"},
		{"/a/; /a/ join=x", "/a/ is given twice"},
		{"/a/ join=bad!name", `group to join "bad!name"`},
		{"/a/ subscribe=[", `bad group pattern "["`},
		{"/a/ types=x[", `bad message type pattern "x["`},
		{"/a/{x", "not a valid route pattern"},
	} {
		_, err := parseRoutes(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.want)
		}
	}
}
