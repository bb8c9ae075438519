package consumer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// Forwarder is a consumer configured rather than programmed, as a
// Channels consumer that joins groups and relays their events: every
// connection joins the Join groups, may subscribe to more, and is sent
// the layer messages whose types it forwards, unchanged. It leaves its
// groups on disconnect. The zero Forwarder joins nothing at connect and
// forwards every type of every group the client subscribes to.
//
// A client speaks in frames: {"type":"subscribe","group":"g"} and
// "unsubscribe" (answered "subscribed" and "unsubscribed", or an error
// frame naming the group), "whoami" (WhoAmI) and "resume". An event
// stream, which sends no frames, names its groups in the "groups" query
// parameter (comma-separated), each joined as a subscribe would.
//
// A client that saw messages before may resume its groups: with the
// history id of the last one it saw in the "since" query parameter, in
// the Last-Event-ID header (event streams), or in a first frame
// {"type":"resume","since":"<id>"}. See Conn.JoinFrom. Each asks for a
// replay, which Server.ReplayRate limits per client address: a connect
// with a position over it is refused with 429 by the Server; a resume
// frame over it is answered with a ReplayError and replays nothing; a
// subscribe with "since" over it joins the group and gets a Resync frame.
//
// A client in several groups gives a position per group, in the same
// places: comma-separated entries, each a bare id (the first Join group,
// or without one the first group of the "groups" parameter) or
// group:id, as in since=41-0,orders:17-3. An entry for a group not
// joined at connect resumes it when the client subscribes to it without
// a "since" of its own. An event stream in several groups writes the
// connection's whole position list as each event's id, so that
// Last-Event-ID resumes every group; in one group, the bare id.
type Forwarder struct {
	// Join lists the groups every connection joins at connect, each one
	// the client may join (Conn.MayJoin); the others are skipped. The
	// first is the default group of bare resume positions. Default none.
	Join []string
	// Subscribe lists the patterns (path.Match) of the groups a client
	// may ask for, by a subscribe frame or the "groups" query parameter.
	// It narrows Conn.MayJoin, never widens it: a group must match both,
	// so who may read a group is decided by Server.PublicGroups and
	// tokens alone. Default: every group MayJoin allows.
	Subscribe []string
	// Types lists the patterns of the message types forwarded to the
	// client; "*" is every type (see Routes.Forward). Default every type.
	// A message of another type is dropped and counted in
	// Stats.Dropped.NotForwarded. Resync frames are always forwarded.
	Types []string
}

// NewForwarder returns the Constructor of the Forwarder f, or an error
// naming a malformed group name or pattern. All its connections share
// one stateless JSON consumer.
func NewForwarder(f Forwarder) (Constructor, error) {
	for _, g := range f.Join {
		if err := channellayer.ValidGroupName(g); err != nil {
			return nil, fmt.Errorf("consumer: group to join %q: %w", g, err)
		}
	}
	for _, p := range f.Subscribe {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return nil, fmt.Errorf("consumer: bad group pattern %q", p)
		}
	}
	f.Join, f.Subscribe = slices.Clone(f.Join), slices.Clone(f.Subscribe)
	types := f.Types
	if len(types) == 0 {
		types = []string{"*"}
	}
	routes := &Routes{}
	if err := routes.Forward(types...); err != nil {
		return nil, err
	}
	routes.HandleFunc(channellayer.ResyncType, forwardResync)
	j := &JSON{Routes: routes, OnConnect: f.connect, OnReceive: f.receive, OnDisconnect: f.disconnect}
	return func(*http.Request) Consumer { return j }, nil
}

// def returns the default group of bare positions, "" if none.
func (f *Forwarder) def() string {
	if len(f.Join) == 0 {
		return ""
	}
	return f.Join[0]
}

// mayAsk checks a group the client asks for against Subscribe; Join and
// JoinFrom then check MayJoin.
func (f *Forwarder) mayAsk(group string) error {
	if f.Subscribe != nil && !matchAny(f.Subscribe, group) {
		return fmt.Errorf("%w on this route: %q", ErrForbiddenGroup, group)
	}
	return nil
}

// unreadable stands for a position the client gave that cannot be read:
// resuming from it yields a resync.
const unreadable = "?"

func (f *Forwarder) connect(ctx context.Context, c *Conn) error {
	r := c.Request()
	raw := resumeFrom(r)
	ps, perr := parsePositions(raw)
	if perr != nil {
		c.Logger().Debug("consumer: resume positions not understood; the client must resync", "since", raw, "err", perr)
	}
	def := f.def()
	if def == "" {
		// A route that joins nothing at connect: a bare id stands for the
		// first group asked for, so that a stream in one group, whose ids
		// are bare, resumes it.
		if gs := queryGroups(r); len(gs) > 0 {
			def = gs[0]
		}
	}
	c.remember(def, ps)
	join := func(group string) error {
		since, ok := c.rememberedSince(group)
		if perr != nil {
			// Every group joined now may have missed messages: each gets a
			// resync rather than silence.
			since, ok = unreadable, true
		}
		var err error
		if ok {
			err = c.JoinFrom(ctx, group, since)
		} else {
			err = c.Join(ctx, group)
		}
		if errors.Is(err, channellayer.ErrUnavailable) {
			// The membership stands and takes effect when the layer
			// returns; the browser stays connected rather than
			// reconnecting in a loop.
			c.Logger().Warn("consumer: joining group while the layer is down", "group", group, "err", err)
			return nil
		}
		return err
	}
	stream := IsEventStream(r)
	// A client whose token does not cover a Join group can still join the
	// groups it does cover.
	for _, g := range f.Join {
		if !c.MayJoin(g) {
			continue
		}
		switch err := join(g); {
		case err == nil:
		case refused(err):
			// The instance holds too many groups to make this one, or the
			// connection is in too many: the client stays, told so.
			if stream {
				c.Logger().Warn("consumer: group refused", "group", g, "err", err)
			} else if err := c.SendJSON(SubscriptionError{Type: "error", Code: frameCode(err), Error: plainError(err), Group: g}); err != nil {
				return err
			}
		default:
			return err
		}
	}
	for _, g := range queryGroups(r) {
		if slices.Contains(c.Groups(), g) {
			continue
		}
		err := f.mayAsk(g)
		if err == nil {
			err = join(g)
		}
		switch {
		case err == nil:
		case refused(err):
			if stream {
				// An event stream cannot be answered a frame it did not ask
				// for by frame; it joins what it may.
				c.Logger().Debug("consumer: group refused", "group", g, "err", err)
			} else if err := c.SendJSON(SubscriptionError{Type: "error", Code: frameCode(err), Error: plainError(err), Group: g}); err != nil {
				return err
			}
			if errors.Is(err, ErrTooManyGroups) {
				return nil // so would every group after it
			}
			// A group refused because the instance holds too many: the
			// next, if it exists here already, may still be joined.
		default:
			return err
		}
	}
	return nil
}

// refused reports whether err is a join refused for the client's own
// reasons or the instance's (its group limit), answered with an error
// frame that names the group rather than by closing the connection.
func refused(err error) bool {
	return errors.Is(err, ErrForbiddenGroup) || errors.Is(err, ErrTooManyGroups) ||
		errors.Is(err, channellayer.ErrInvalidName) || errors.Is(err, groups.ErrGroupLimit)
}

// queryGroups returns the groups the "groups" query parameter lists.
func queryGroups(r *http.Request) []string {
	var gs []string
	for _, v := range r.URL.Query()["groups"] {
		for g := range strings.SplitSeq(v, ",") {
			if g != "" && !slices.Contains(gs, g) {
				gs = append(gs, g)
			}
		}
	}
	return gs
}

// forwardResync tells the client to reload the group whose messages the
// layer lost: the group the message was sent to, or, when it came to the
// channel alone, the group its data names.
func forwardResync(_ context.Context, c *Conn, msg channellayer.Message) error {
	group := c.dispatching
	if group == "" {
		var named struct {
			Group string `json:"group"`
		}
		_ = json.Unmarshal(msg.Bytes(), &named)
		group = named.Group
	}
	return c.sendInline(resyncFrame(group))
}

// resumeFrom returns the positions a client resumes from: the
// Last-Event-ID an EventSource sends when it reconnects, or the "since"
// query parameter.
func resumeFrom(r *http.Request) string {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		return id
	}
	return r.URL.Query().Get("since")
}

// Subscription is a client's request to join or leave a group,
// {"type":"subscribe","group":"..."} or {"type":"unsubscribe",...}, and
// the server's answer, {"type":"subscribed","group":"..."} or
// {"type":"unsubscribed",...}. A refused request is answered with an
// error frame that names the group.
type Subscription struct {
	Type  string `json:"type"`
	Group string `json:"group"`
}

// SubscriptionError is the error frame for a refused subscription.
type SubscriptionError struct {
	Type  string `json:"type"` // "error"
	Code  string `json:"code"` // "forbidden", "too_many_groups", "bad_request" or "not_member"
	Error string `json:"error"`
	Group string `json:"group"`
}

// ReplayError is the error frame for a resume frame refused because the
// client's address asked for too many replays (Server.ReplayRate):
// {"type":"error","error":"...","code":"replay_rate_limited",
// "retry_after":<seconds>}, with "group" when the frame named one.
// Nothing was replayed; the connection and its live stream go on, and
// the client may send the resume frame again after RetryAfter seconds.
type ReplayError struct {
	Type       string `json:"type"` // "error"
	Error      string `json:"error"`
	Code       string `json:"code"` // "replay_rate_limited"
	RetryAfter int    `json:"retry_after"`
	Group      string `json:"group,omitempty"`
}

// WhoAmI is the frame a client sends as {"type":"whoami"} to learn its
// channel name, and the answer it gets back with Channel set. A page can
// hand the name to its backend, which can then send to exactly this
// connection with POST /api/channels/{channel}/send.
type WhoAmI struct {
	Type    string `json:"type"` // "whoami"
	Channel string `json:"channel"`
}

// request is a client frame a Forwarder understands.
type request struct {
	Type      string     // "whoami", "subscribe", "unsubscribe" or "resume"
	Group     string     // for subscribe and unsubscribe, and optionally resume
	Since     string     // for resume with a group, and optionally subscribe: a history id
	Positions []position // for resume without a group: a position per group
}

// decodeRequest reads a request from a decoded client frame.
func decodeRequest(obj map[string]json.RawMessage) (request, error) {
	var r request
	if err := json.Unmarshal(obj["type"], &r.Type); err != nil || r.Type == "" {
		return r, errors.New(`frame needs a string "type"`)
	}
	switch r.Type {
	case "whoami":
	case "subscribe", "unsubscribe":
		if err := json.Unmarshal(obj["group"], &r.Group); err != nil || r.Group == "" {
			return r, fmt.Errorf(`%s needs a string "group"`, r.Type)
		}
		if raw, ok := obj["since"]; ok && r.Type == "subscribe" {
			if err := json.Unmarshal(raw, &r.Since); err != nil || r.Since == "" {
				return r, errors.New(`"since" must be a history id string`)
			}
		}
	case "resume":
		if err := json.Unmarshal(obj["since"], &r.Since); err != nil || r.Since == "" {
			return r, errors.New(`resume needs a string "since"`)
		}
		if raw, ok := obj["group"]; ok {
			if err := json.Unmarshal(raw, &r.Group); err != nil || r.Group == "" {
				return r, errors.New(`"group" must be a string`)
			}
			break
		}
		ps, err := parsePositions(r.Since)
		if err != nil {
			return r, fmt.Errorf(`"since" is not a history id or a list of group:id: %v`, err)
		}
		r.Positions, r.Since = ps, ""
	default:
		return r, fmt.Errorf("unknown frame type %q (want whoami, subscribe, unsubscribe or resume)", r.Type)
	}
	if r.Since != "" {
		if _, err := channellayer.ParseID(r.Since); err != nil {
			return r, fmt.Errorf(`"since" is not a history id: %v`, err)
		}
	}
	return r, nil
}

func (f *Forwarder) receive(ctx context.Context, c *Conn, obj map[string]json.RawMessage) error {
	r, err := decodeRequest(obj)
	if err != nil {
		return c.SendJSON(ErrorFrame{Type: "error", Code: CodeBadRequest, Error: err.Error()})
	}
	switch r.Type {
	case "whoami":
		return c.SendJSON(WhoAmI{Type: "whoami", Channel: c.Channel()})
	case "resume":
		if secs, err := c.AllowReplay(); err != nil {
			return c.SendJSON(ReplayError{Type: "error", Error: err.Error(), Code: "replay_rate_limited", RetryAfter: secs, Group: r.Group})
		}
		if r.Group != "" {
			r.Positions = []position{{group: r.Group, id: r.Since}}
		}
		joined := c.Groups()
		for _, p := range r.Positions {
			group := cmp.Or(p.group, c.defaultGroup())
			if !slices.Contains(joined, group) {
				if err := c.SendJSON(SubscriptionError{Type: "error", Code: CodeNotMember, Error: "resume: not a member of the group; subscribe with \"since\" instead", Group: group}); err != nil {
					return err
				}
				continue
			}
			c.Resume(ctx, group, p.id)
		}
		return nil
	case "subscribe":
		if err := f.mayAsk(r.Group); err != nil {
			return c.SendJSON(SubscriptionError{Type: "error", Code: frameCode(err), Error: plainError(err), Group: r.Group})
		}
		since := r.Since
		if since != "" {
			if _, err := c.AllowReplay(); err != nil {
				// Over the replay rate: the group is joined all the same, and
				// the client told to resync it rather than left with a gap.
				since = unreadable
			}
		}
		if since == "" {
			// A position the client gave when it connected.
			since, _ = c.rememberedSince(r.Group)
		}
		if since != "" {
			err = c.JoinFrom(ctx, r.Group, since)
			break
		}
		err = c.Join(ctx, r.Group)
	default:
		err = c.Leave(ctx, r.Group)
	}
	switch {
	case err == nil, errors.Is(err, channellayer.ErrUnavailable):
		return c.SendJSON(Subscription{Type: r.Type + "d", Group: r.Group})
	case refused(err):
		return c.SendJSON(SubscriptionError{Type: "error", Code: frameCode(err), Error: plainError(err), Group: r.Group})
	default:
		return err
	}
}

func (f *Forwarder) disconnect(c *Conn, _ websocket.StatusCode) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, g := range c.Groups() {
		if err := c.Leave(ctx, g); err != nil {
			c.Logger().Warn("consumer: leaving group", "group", g, "err", err)
		}
	}
}
