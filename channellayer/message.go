package channellayer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Message is one JSON object with a string "type", held in its encoded
// form so that it is encoded once and written many times. The zero
// Message is invalid.
type Message struct {
	typ  string
	id   string // history id, for messages delivered from a group with history
	key  string // idempotency key of the send, see WithKey
	data []byte
}

// NewMessage encodes v, which must marshal to a JSON object with a
// non-empty string "type".
func NewMessage(v any) (Message, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	return ParseMessage(data)
}

// ParseMessage checks that data is a JSON object with a non-empty string
// "type" and wraps it without copying; the caller must not modify data
// afterwards.
func ParseMessage(data []byte) (Message, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return Message{}, fmt.Errorf("%w: not a JSON object", ErrInvalidMessage)
	}
	if !utf8.Valid(data) {
		return Message{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalidMessage)
	}
	typ, err := readType(data)
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Message{}, fmt.Errorf("%w: %s", ErrInvalidMessage, syntaxProblem(data))
	case err != nil:
		return Message{}, fmt.Errorf("%w: %s", ErrInvalidMessage, err.Error())
	}
	return Message{typ: typ, data: data}, nil
}

// syntaxProblem says where data, valid UTF-8, stops being JSON, quoting
// the character there. encoding/json's own text quotes the byte it
// stopped at as if it were a character, which garbles any character
// outside ASCII ('é' becomes 'Ã'), and a streaming decoder's offset is
// that of the token, not of the byte.
func syntaxProblem(data []byte) string {
	off := syntaxOffset(data)
	switch {
	case off < 1 || off > len(data):
		return "not valid JSON"
	case off == len(data) && syntaxOffset(append(data[:off:off], ' ')) != off:
		// The input ran out: with one more byte, the error moves past it.
		return "not valid JSON: it ends before the object does"
	}
	r, _ := utf8.DecodeRune(data[off-1:])
	return fmt.Sprintf("not valid JSON: unexpected %q at byte %d", r, off)
}

// syntaxOffset returns how many bytes of data a whole-input decode read
// before its syntax error (json.SyntaxError.Offset), which makes the last
// of them the byte at fault; 0 if data has no syntax error.
func syntaxOffset(data []byte) int {
	var v json.RawMessage
	var syn *json.SyntaxError
	if err := json.Unmarshal(data, &v); errors.As(err, &syn) {
		return int(syn.Offset)
	}
	return 0
}

// readType checks that data is exactly one JSON object and returns its
// "type". Keys are matched exactly: encoding/json would also take "TYPE"
// or "Type", which a browser reading event.type would not see.
func readType(data []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", errors.New("not a JSON object")
	}
	typ, found := "", false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		if key, _ := tok.(string); key != "type" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", err
			}
			continue
		}
		if found {
			return "", errors.New(`"type" appears twice`)
		}
		found = true
		tok, err = dec.Token()
		if err != nil {
			return "", err
		}
		s, ok := tok.(string)
		if !ok {
			if d, isDelim := tok.(json.Delim); isDelim {
				tok = "an " + map[json.Delim]string{'{': "object", '[': "array"}[d]
			}
			return "", fmt.Errorf(`"type" is %v, not a string`, tok)
		}
		typ = s
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("data after the JSON object")
	}
	if !found {
		return "", errors.New(`missing "type"`)
	}
	if typ == "" {
		return "", errors.New(`"type" is empty`)
	}
	return typ, nil
}

// Type returns the message's "type".
func (m Message) Type() string { return m.typ }

// ID returns the message's history id, or "" when it did not come from
// a group's history. Bytes then end with the IDField that carries it.
func (m Message) ID() string { return m.id }

// WithKey returns m carrying the idempotency key key. A layer applies a
// send of a keyed message at most once per key within its dedupe window:
// a second send with the same key (a publisher's retry, or a client
// library's retry after a timeout) is not delivered again and reports
// what the first one did. The key is not part of the encoded object.
func (m Message) WithKey(key string) Message {
	m.key = key
	return m
}

// Key returns the idempotency key set with WithKey, or "".
func (m Message) Key() string { return m.key }

// Bytes returns the encoded JSON object. It is shared: do not modify it.
func (m Message) Bytes() []byte { return m.data }

// Valid reports whether m was made by NewMessage or ParseMessage.
func (m Message) Valid() bool { return m.typ != "" }

// MarshalJSON returns the encoded object.
func (m Message) MarshalJSON() ([]byte, error) {
	if !m.Valid() {
		return nil, ErrInvalidMessage
	}
	return m.data, nil
}

// UnmarshalJSON parses and validates a message.
func (m *Message) UnmarshalJSON(data []byte) error {
	msg, err := ParseMessage(append([]byte(nil), data...))
	if err != nil {
		return err
	}
	*m = msg
	return nil
}

// String returns the encoded object as text.
func (m Message) String() string { return string(m.data) }

// MessageFrom rebuilds a Message from the parts a groups.Member was handed
// by a layer, without checking them again: layers deliver only messages
// that were valid when published, so members need not parse them once
// per recipient.
func MessageFrom(msgType string, data []byte) Message {
	return Message{typ: msgType, data: data}
}

// MessageFromID is MessageFrom for a message that carries the history
// id id.
func MessageFromID(msgType, id string, data []byte) Message {
	return Message{typ: msgType, id: id, data: data}
}
