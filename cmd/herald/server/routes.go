package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/heraldhq/herald/cmd/internal/demo"
	"github.com/heraldhq/herald/consumer"
)

// defaultRoutes is the route table of HERALD_ROUTES by default: the demo
// page's route alone.
const defaultRoutes = demo.Path + " join=" + demo.Group + " types=" + demo.Type

// route is one WebSocket and event-stream path of HERALD_ROUTES and the
// consumer that serves it.
type route struct {
	path string
	fwd  consumer.Forwarder
	new  consumer.Constructor
}

// parseRoutes reads HERALD_ROUTES: routes separated by ";", each a path
// followed by space-separated fields join=, subscribe= and types=, whose
// values are comma-separated lists as in the other settings:
//
//	/notifications/ join=gossip types=name.gossip; /events/ types=*
//
// A missing field takes the consumer.Forwarder default: join none,
// subscribe any group the client may join, forward every type.
func parseRoutes(v string) ([]route, error) {
	var routes []route
	for i, spec := range strings.Split(v, ";") {
		fields := strings.Fields(spec)
		if len(fields) == 0 {
			if strings.TrimSpace(v) == "" {
				return nil, errors.New("no route: give at least one, such as " + defaultRoutes)
			}
			return nil, fmt.Errorf("route %d is empty (routes are separated by ';')", i+1)
		}
		r := route{path: fields[0]}
		if err := checkRoutePath(r.path); err != nil {
			return nil, fmt.Errorf("route %d: %w", i+1, err)
		}
		for _, prev := range routes {
			if prev.path == r.path {
				return nil, fmt.Errorf("route %d: path %s is given twice", i+1, r.path)
			}
		}
		seen := map[string]bool{}
		for _, f := range fields[1:] {
			key, val, ok := strings.Cut(f, "=")
			var list *[]string
			switch key {
			case "join":
				list = &r.fwd.Join
			case "subscribe":
				list = &r.fwd.Subscribe
			case "types":
				list = &r.fwd.Types
			default:
				return nil, fmt.Errorf("route %s: unknown field %q (want join=, subscribe= or types=)", r.path, f)
			}
			if !ok || val == "" {
				return nil, fmt.Errorf("route %s: %s needs a value, such as %s=a,b", r.path, key, key)
			}
			if seen[key] {
				return nil, fmt.Errorf("route %s: %s is given twice", r.path, key)
			}
			seen[key] = true
			for item := range strings.SplitSeq(val, ",") {
				if item == "" {
					return nil, fmt.Errorf("route %s: %s has an empty entry in %q", r.path, key, val)
				}
				*list = append(*list, item)
			}
		}
		var err error
		if r.new, err = consumer.NewForwarder(r.fwd); err != nil {
			return nil, fmt.Errorf("route %s: %s", r.path, strings.TrimPrefix(err.Error(), "consumer: "))
		}
		routes = append(routes, r)
	}
	return routes, nil
}

// checkRoutePath refuses a path the router could not serve: chi panics
// on a malformed pattern, and a setting must fail with a message instead.
func checkRoutePath(p string) (err error) {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q must start with /", p)
	}
	defer func() {
		if recover() != nil {
			err = fmt.Errorf("path %q is not a valid route pattern", p)
		}
	}()
	chi.NewRouter().Get(p, func(http.ResponseWriter, *http.Request) {})
	return nil
}
