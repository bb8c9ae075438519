package notifier

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/heraldhq/herald/channellayer"
)

// ErrInvalidBridge reports a Bridge that cannot work, such as a table
// name that is not a plain identifier.
var ErrInvalidBridge = errors.New("notifier: invalid bridge")

// maxIdentifier is the longest Postgres identifier, in bytes.
const maxIdentifier = 63

// Bridge delivers every row inserted into one table to one group. The
// trigger and the log are the same for every bridge; a bridge only says
// where a row goes and what the message looks like.
//
// Without Encode, a row becomes
//
//	{"type": Type, field: value, ...}
//
// with one field per entry of Fields, or one per column when Fields is
// nil. Values keep their JSON form from Postgres's to_jsonb: numbers,
// strings, booleans, nested JSON, timestamps as ISO 8601 strings.
type Bridge struct {
	// Table is the table whose inserts are delivered: name or
	// schema.name, each part of lower-case ASCII letters, digits and '_',
	// not starting with a digit, at most 63 bytes (unquoted Postgres
	// identifiers). Required. A table may be bridged once.
	Table string
	// Group receives a message for each row. Required.
	Group string
	// Type is the message "type". Required unless Encode is set.
	Type string
	// Fields maps message fields to the columns they take their value
	// from, as {"customer": "customer_id"}. A column missing from the row
	// gives null. Default (nil): every column under its own name, except
	// a column named "type", which would hide the message type.
	Fields map[string]string
	// Encode, if set, builds the message from the row, a JSON object of
	// every column, instead of Type and Fields. An error skips the row
	// (and is logged). PostsBridge uses it for the name.gossip shape.
	Encode func(row []byte) (channellayer.Message, error)
}

// PostsBridge is the default bridge: the posts table to group (default
// DefaultGroup) as name.gossip messages built by GossipMessage.
func PostsBridge(group string) Bridge {
	if group == "" {
		group = DefaultGroup
	}
	return Bridge{
		Table: "posts",
		Group: group,
		Type:  MessageType,
		Encode: func(row []byte) (channellayer.Message, error) {
			p, err := decodePost(row)
			if err != nil {
				return channellayer.Message{}, err
			}
			return GossipMessage(p)
		},
	}
}

// validate reports an error wrapping ErrInvalidBridge for a bridge that
// cannot work.
func (b Bridge) validate() error {
	if err := validTable(b.Table); err != nil {
		return fmt.Errorf("%w: table %q: %v", ErrInvalidBridge, b.Table, err)
	}
	if err := channellayer.ValidGroupName(b.Group); err != nil {
		return fmt.Errorf("%w: table %s: %w", ErrInvalidBridge, b.Table, err)
	}
	if b.Encode == nil && b.Type == "" {
		return fmt.Errorf("%w: table %s: no message type", ErrInvalidBridge, b.Table)
	}
	for field, column := range b.Fields {
		switch {
		case field == "" || column == "":
			return fmt.Errorf("%w: table %s: empty field or column name in %q=%q", ErrInvalidBridge, b.Table, field, column)
		case field == "type":
			return fmt.Errorf("%w: table %s: field \"type\" is the message type; map column %q to another field", ErrInvalidBridge, b.Table, column)
		}
	}
	return nil
}

// validTable accepts name or schema.name made of unquoted lower-case
// identifiers. Only such names reach SQL, and always quoted, so a setting
// cannot inject SQL; refusing upper case avoids a quoted "Orders" that
// silently differs from the orders an app created.
func validTable(table string) error {
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return errors.New("use name or schema.name")
	}
	for _, p := range parts {
		if p == "" {
			return errors.New("empty name")
		}
		if len(p) > maxIdentifier {
			return fmt.Errorf("%q is longer than %d bytes", p, maxIdentifier)
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !('a' <= c && c <= 'z' || c == '_' || i > 0 && '0' <= c && c <= '9') {
				return fmt.Errorf("character %q at byte %d is not allowed (use lower-case ASCII letters, digits and '_', not starting with a digit)", c, i)
			}
		}
	}
	return nil
}

// validateBridges checks each bridge and that no table is bridged twice.
// An empty list means the default, PostsBridge.
func validateBridges(bridges []Bridge) ([]Bridge, error) {
	if len(bridges) == 0 {
		return []Bridge{PostsBridge("")}, nil
	}
	seen := map[string]bool{}
	for _, b := range bridges {
		if err := b.validate(); err != nil {
			return nil, err
		}
		if seen[b.Table] {
			return nil, fmt.Errorf("%w: table %s is bridged twice", ErrInvalidBridge, b.Table)
		}
		seen[b.Table] = true
	}
	return bridges, nil
}

// message turns a logged row into the message for b.Group.
func (b Bridge) message(row []byte) (channellayer.Message, error) {
	if b.Encode != nil {
		return b.Encode(row)
	}
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(row, &cols); err != nil || cols == nil {
		return channellayer.Message{}, fmt.Errorf("%w: row is not a JSON object", errBadRow)
	}
	fields := b.Fields
	if fields == nil {
		fields = make(map[string]string, len(cols))
		for c := range cols {
			if c != "type" {
				fields[c] = c
			}
		}
	}
	var buf bytes.Buffer
	buf.WriteString(`{"type":`)
	writeJSONString(&buf, b.Type)
	for _, field := range slices.Sorted(maps.Keys(fields)) {
		buf.WriteByte(',')
		writeJSONString(&buf, field)
		buf.WriteByte(':')
		if v, ok := cols[fields[field]]; ok {
			buf.Write(v)
		} else {
			buf.WriteString("null")
		}
	}
	buf.WriteByte('}')
	return channellayer.ParseMessage(buf.Bytes())
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// ParseBridges reads bridges from a setting: a comma-separated list of
// table:group:type, each optionally followed by :fields, a '+'-separated
// list of field=column or column (a field named after its column). For
// example
//
//	orders:orders:order.created,shop.refunds:refunds:refund.issued:id+amount+customer=customer_id
//
// An empty setting gives no bridges. Every bridge is validated.
func ParseBridges(s string) ([]Bridge, error) {
	var bridges []Bridge
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		if len(parts) != 3 && len(parts) != 4 {
			return nil, fmt.Errorf("%w: %q is not table:group:type[:fields]", ErrInvalidBridge, item)
		}
		b := Bridge{Table: parts[0], Group: parts[1], Type: parts[2]}
		if len(parts) == 4 {
			b.Fields = map[string]string{}
			for f := range strings.SplitSeq(parts[3], "+") {
				field, column, ok := strings.Cut(f, "=")
				if !ok {
					column = field
				}
				if _, dup := b.Fields[field]; dup {
					return nil, fmt.Errorf("%w: %q names field %q twice", ErrInvalidBridge, item, field)
				}
				b.Fields[field] = column
			}
		}
		bridges = append(bridges, b)
	}
	if len(bridges) == 0 {
		return nil, nil
	}
	return validateBridges(bridges)
}
