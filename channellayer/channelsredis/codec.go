package channelsredis

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/heraldhq/herald/channellayer"
)

// channelKey is the reserved key under which channels_redis's core layer
// names, inside a message, the channels it is for.
const channelKey = "__asgi_channel__"

// maxDepth bounds the nesting of arrays and maps the decoder follows, so
// that hostile bytes cannot exhaust the stack.
const maxDepth = 64

// errFormat reports bytes from Redis that are not a message in the
// channels_redis format.
var errFormat = errors.New("channelsredis: malformed message")

// body is a message's map entries encoded once as msgpack, without the
// map header, so that the same entries can be framed with and without
// the channel list that differs per inbox.
type body struct {
	n       int
	entries []byte
}

// encodeBody turns the JSON object of msg into msgpack map entries, key
// order kept. JSON numbers become integers when they are whole and fit,
// floats otherwise, as Python's json module would read them.
func encodeBody(msg channellayer.Message) (body, error) {
	dec := json.NewDecoder(bytes.NewReader(msg.Bytes()))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return body{}, fmt.Errorf("%w: not a JSON object", channellayer.ErrInvalidMessage)
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	n, err := encodeEntries(dec, enc)
	if err != nil {
		return body{}, fmt.Errorf("%w: %v", channellayer.ErrInvalidMessage, err)
	}
	return body{n: n, entries: buf.Bytes()}, nil
}

// frame returns the msgpack map of b, plus the channel entry when channel
// is a string or a list of strings.
func (b body) frame(channel any) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b.entries) + 64)
	enc := msgpack.NewEncoder(&buf)
	n := b.n
	if channel != nil {
		n++
	}
	_ = enc.EncodeMapLen(n)
	buf.Write(b.entries)
	switch c := channel.(type) {
	case string:
		_ = enc.EncodeString(channelKey)
		_ = enc.EncodeString(c)
	case []string:
		_ = enc.EncodeString(channelKey)
		_ = enc.EncodeArrayLen(len(c))
		for _, s := range c {
			_ = enc.EncodeString(s)
		}
	}
	return buf.Bytes()
}

// encodeEntries encodes the members of a JSON object whose opening brace
// was read, through its closing brace, and returns how many there were.
func encodeEntries(dec *json.Decoder, enc *msgpack.Encoder) (int, error) {
	n := 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, err
		}
		key, ok := tok.(string)
		if !ok {
			return 0, fmt.Errorf("object key %v is not a string", tok)
		}
		if key == channelKey {
			return 0, fmt.Errorf("%q is reserved", channelKey)
		}
		if err := enc.EncodeString(key); err != nil {
			return 0, err
		}
		if err := encodeValue(dec, enc, 1); err != nil {
			return 0, err
		}
		n++
	}
	_, err := dec.Token() // '}'
	return n, err
}

func encodeValue(dec *json.Decoder, enc *msgpack.Encoder, depth int) error {
	if depth > maxDepth {
		return errors.New("nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case nil:
		return enc.EncodeNil()
	case bool:
		return enc.EncodeBool(v)
	case string:
		return enc.EncodeString(v)
	case json.Number:
		return encodeNumber(enc, v)
	case json.Delim:
		// Containers are encoded into a scratch encoder first: msgpack
		// wants the length before the elements.
		var sub bytes.Buffer
		subEnc := msgpack.NewEncoder(&sub)
		n := 0
		if v == '{' {
			for dec.More() {
				if err := encodeValue(dec, subEnc, depth+1); err != nil { // key
					return err
				}
				if err := encodeValue(dec, subEnc, depth+1); err != nil {
					return err
				}
				n++
			}
			if err := enc.EncodeMapLen(n); err != nil {
				return err
			}
		} else {
			for dec.More() {
				if err := encodeValue(dec, subEnc, depth+1); err != nil {
					return err
				}
				n++
			}
			if err := enc.EncodeArrayLen(n); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // closing delimiter
			return err
		}
		_, err := enc.Writer().Write(sub.Bytes())
		return err
	}
	return fmt.Errorf("unexpected JSON token %v", tok)
}

func encodeNumber(enc *msgpack.Encoder, n json.Number) error {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return enc.EncodeInt(i)
	}
	if u, err := strconv.ParseUint(string(n), 10, 64); err == nil {
		return enc.EncodeUint(u)
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return err
	}
	return enc.EncodeFloat64(f)
}

// decodeMessage reads one msgpack map as channels_redis writes it and
// returns it as a Message, with the channels named by its channel entry
// (none, one or several) taken out.
//
// Values map to JSON as Python's json module maps what msgpack decodes:
// bytes become base64 strings (there is no JSON for raw bytes), integer,
// float and boolean map keys become their text, NaN and infinities
// become null. Extension types are refused.
func decodeMessage(data []byte) (channels []string, msg channellayer.Message, err error) {
	r := bytes.NewReader(data)
	d := dec{msgpack.NewDecoder(r), r}
	n, err := mapLen(d)
	if err != nil {
		return nil, channellayer.Message{}, err
	}
	var out bytes.Buffer
	out.Grow(len(data) + len(data)/4)
	out.WriteByte('{')
	first := true
	for range n {
		key, err := decodeKey(d)
		if err != nil {
			return nil, channellayer.Message{}, err
		}
		if key == channelKey {
			if channels, err = decodeChannels(d); err != nil {
				return nil, channellayer.Message{}, err
			}
			continue
		}
		if !first {
			out.WriteByte(',')
		}
		first = false
		writeString(&out, key)
		out.WriteByte(':')
		if err := transcode(d, &out, 1); err != nil {
			return nil, channellayer.Message{}, err
		}
	}
	out.WriteByte('}')
	if r.Len() != 0 {
		return nil, channellayer.Message{}, fmt.Errorf("%w: %d bytes after the map", errFormat, r.Len())
	}
	msg, err = channellayer.ParseMessage(out.Bytes())
	if err != nil {
		return nil, channellayer.Message{}, err
	}
	return channels, msg, nil
}

func mapLen(d dec) (int, error) {
	c, err := d.PeekCode()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errFormat, err)
	}
	if !msgpcode.IsFixedMap(c) && c != msgpcode.Map16 && c != msgpcode.Map32 {
		return 0, fmt.Errorf("%w: not a map", errFormat)
	}
	n, err := d.DecodeMapLen()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errFormat, err)
	}
	return n, nil
}

func decodeChannels(d dec) ([]string, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFormat, err)
	}
	if msgpcode.IsString(c) {
		s, err := d.DecodeString()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errFormat, err)
		}
		return []string{s}, nil
	}
	if !msgpcode.IsFixedArray(c) && c != msgpcode.Array16 && c != msgpcode.Array32 {
		return nil, fmt.Errorf("%w: %s is neither a string nor a list", errFormat, channelKey)
	}
	n, err := d.DecodeArrayLen()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFormat, err)
	}
	var out []string
	for range n {
		c, err := d.PeekCode()
		if err != nil || !msgpcode.IsString(c) {
			return nil, fmt.Errorf("%w: %s holds a value that is not a string", errFormat, channelKey)
		}
		s, err := d.DecodeString()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errFormat, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// decodeKey reads a map key and returns the JSON object key it becomes.
func decodeKey(d dec) (string, error) {
	c, err := d.PeekCode()
	if err != nil {
		return "", fmt.Errorf("%w: %v", errFormat, err)
	}
	switch {
	case msgpcode.IsString(c):
		s, err := d.DecodeString()
		if err != nil {
			return "", fmt.Errorf("%w: %v", errFormat, err)
		}
		return s, nil
	case c == msgpcode.Nil, c == msgpcode.True, c == msgpcode.False, isNumber(c):
		var b bytes.Buffer
		if err := transcode(d, &b, maxDepth); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	return "", fmt.Errorf("%w: map key of type 0x%02x cannot be a JSON key", errFormat, c)
}

func isNumber(c byte) bool {
	return msgpcode.IsFixedNum(c) || (c >= msgpcode.Float && c <= msgpcode.Int64)
}

// dec reads msgpack from bytes held in memory. Its string and bytes
// reads check a length against what is left before allocating, so that
// a short hostile input cannot claim gigabytes.
type dec struct {
	*msgpack.Decoder
	r *bytes.Reader // read directly by the Decoder: a bytes.Reader is not buffered again
}

func (d dec) DecodeBytes() ([]byte, error) {
	n, err := d.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 || n > d.r.Len() {
		return nil, fmt.Errorf("length %d, %d bytes left", n, d.r.Len())
	}
	b := make([]byte, n)
	_, err = io.ReadFull(d.r, b)
	return b, err
}

func (d dec) DecodeString() (string, error) {
	b, err := d.DecodeBytes()
	return string(b), err
}

// transcode reads one msgpack value and writes it as JSON.
func transcode(d dec, w *bytes.Buffer, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: nested too deeply", errFormat)
	}
	c, err := d.PeekCode()
	if err != nil {
		return fmt.Errorf("%w: %v", errFormat, err)
	}
	wrap := func(err error) error { return fmt.Errorf("%w: %v", errFormat, err) }
	switch {
	case c == msgpcode.Nil:
		if err := d.DecodeNil(); err != nil {
			return wrap(err)
		}
		w.WriteString("null")
	case c == msgpcode.True || c == msgpcode.False:
		v, err := d.DecodeBool()
		if err != nil {
			return wrap(err)
		}
		w.WriteString(strconv.FormatBool(v))
	case c == msgpcode.Float || c == msgpcode.Double:
		f, err := d.DecodeFloat64()
		if err != nil {
			return wrap(err)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			w.WriteString("null")
			break
		}
		b, _ := json.Marshal(f)
		w.Write(b)
	case c >= msgpcode.Uint8 && c <= msgpcode.Uint64:
		u, err := d.DecodeUint64()
		if err != nil {
			return wrap(err)
		}
		w.WriteString(strconv.FormatUint(u, 10))
	case msgpcode.IsFixedNum(c) || (c >= msgpcode.Int8 && c <= msgpcode.Int64):
		i, err := d.DecodeInt64()
		if err != nil {
			return wrap(err)
		}
		w.WriteString(strconv.FormatInt(i, 10))
	case msgpcode.IsString(c):
		s, err := d.DecodeString()
		if err != nil {
			return wrap(err)
		}
		writeString(w, s)
	case msgpcode.IsBin(c):
		b, err := d.DecodeBytes()
		if err != nil {
			return wrap(err)
		}
		w.WriteByte('"')
		w.WriteString(base64.StdEncoding.EncodeToString(b))
		w.WriteByte('"')
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return wrap(err)
		}
		w.WriteByte('[')
		for i := range n {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := transcode(d, w, depth+1); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return wrap(err)
		}
		w.WriteByte('{')
		for i := range n {
			if i > 0 {
				w.WriteByte(',')
			}
			key, err := decodeKey(d)
			if err != nil {
				return err
			}
			writeString(w, key)
			w.WriteByte(':')
			if err := transcode(d, w, depth+1); err != nil {
				return err
			}
		}
		w.WriteByte('}')
	default:
		return fmt.Errorf("%w: unsupported msgpack type 0x%02x", errFormat, c)
	}
	return nil
}

// writeString writes s as a JSON string without escaping HTML characters
// and with invalid UTF-8 replaced, as encoding/json does.
func writeString(w *bytes.Buffer, s string) {
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes with U+FFFD
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	w.Truncate(w.Len() - 1) // Encode's newline
}
