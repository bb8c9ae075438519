package channelsredis

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// Payloads captured from a Django project running channels_redis 4.0.0
// (see /work/shared/interop/channels_redis in the development
// environment): a core group send to one member, a pub/sub group send,
// and a core group send to two members of one process.
const (
	capturedCore   = "f00d1493b49d0dfd20ca8e4985a474797065ab6e616d652e676f73736970a56576656e74a84e657720506f7374a673656e646572a84a616e6520446f65a76d657373616765af48656c6c6f2c20676f737369707321b05f5f617367695f6368616e6e656c5f5f91d94a73706563696669632e3036633666623861656234303434636361373566353164616166643663643664213732353464633565666132623437346461636530383231643437626632326135"
	capturedPubSub = "84a474797065ab6e616d652e676f73736970a56576656e74a84e657720506f7374a673656e646572a84a616e6520446f65a76d657373616765af48656c6c6f2c20676f737369707321"
	capturedTwo    = "118065a04b937cc97735f03a87a474797065ab6e616d652e676f73736970a56576656e74a84e657720506f7374a673656e646572a97075626c6973686572a76d657373616765a0a373657100a27473cf18eb63f0b7c2cc7db05f5f617367695f6368616e6e656c5f5f92d94a73706563696669632e6535383563333138373738663463623438303739383065623866613438333535213161306138383336373332393465663161326337353231633934333336323533d94a73706563696669632e6535383563333138373738663463623438303739383065623866613438333535216433393630356464383766393435393762366265646561333436333731313931"
)

const gossipJSON = `{"type":"name.gossip","event":"New Post","sender":"Jane Doe","message":"Hello, gossips!"}`

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeCaptured(t *testing.T) {
	core := unhex(t, capturedCore)
	l := &Core{}
	chans, msg, err := l.decode(core)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"specific.06c6fb8aeb4044cca75f51daafd6cd6d!7254dc5efa2b474dace0821d47bf22a5"}
	if !slices.Equal(chans, want) || msg.String() != gossipJSON || msg.Type() != "name.gossip" {
		t.Fatalf("core payload decoded as %q %s", chans, msg)
	}

	chans, msg, err = decodeMessage(unhex(t, capturedPubSub))
	if err != nil || chans != nil || msg.String() != gossipJSON {
		t.Fatalf("pub/sub payload decoded as %q %s %v", chans, msg, err)
	}

	chans, msg, err = l.decode(unhex(t, capturedTwo))
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 2 || msg.String() != `{"type":"name.gossip","event":"New Post","sender":"publisher","message":"","seq":0,"ts":1795638761963572349}` {
		t.Fatalf("two-member payload decoded as %q %s", chans, msg)
	}
}

// TestEncodeMatchesPython checks that Herald writes the very bytes
// Python's msgpack writes for the same message.
func TestEncodeMatchesPython(t *testing.T) {
	msg, err := channellayer.ParseMessage([]byte(gossipJSON))
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeBody(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.frame(nil), unhex(t, capturedPubSub); !bytes.Equal(got, want) {
		t.Errorf("pub/sub frame\n got %x\nwant %x", got, want)
	}
	ch := []string{"specific.06c6fb8aeb4044cca75f51daafd6cd6d!7254dc5efa2b474dace0821d47bf22a5"}
	if got, want := b.frame(ch), unhex(t, capturedCore)[randomPrefixLen:]; !bytes.Equal(got, want) {
		t.Errorf("core frame\n got %x\nwant %x", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, in := range []string{
		`{"type":"x"}`,
		`{"type":"x","n":-1,"big":18446744073709551615,"neg":-9223372036854775808,"f":1.5,"e":1e+300}`,
		`{"type":"x","nested":{"a":[1,"two",null,true,false,{"b":[]}]},"s":"<&> é \u2028"}`,
	} {
		msg, err := channellayer.ParseMessage([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		b, err := encodeBody(msg)
		if err != nil {
			t.Fatal(err)
		}
		chans, out, err := decodeMessage(b.frame("specific.a!b"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(chans, []string{"specific.a!b"}) {
			t.Errorf("channels %q", chans)
		}
		if want := compact(t, in); out.String() != want {
			t.Errorf("round trip of %s gave %s", want, out)
		}
	}
	if _, err := encodeBody(mustParse(t, `{"type":"x","__asgi_channel__":"a"}`)); !errors.Is(err, channellayer.ErrInvalidMessage) {
		t.Errorf("a message holding the reserved key: %v", err)
	}
}

func TestDecodeOddValues(t *testing.T) {
	// {"type": "x", 1: b"\x00\xff", True: 1.0, None: nan}
	data := unhex(t, "84a474797065a17801c40200ffc3cb3ff0000000000000c0cb7ff8000000000000")
	_, msg, err := decodeMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"x","1":"AP8=","true":1,"null":null}`; msg.String() != want {
		t.Fatalf("got %s, want %s", msg, want)
	}
	for name, bad := range map[string]string{
		"not a map":       "a474797065",
		"no type":         "81a161a162",
		"trailing":        "81a474797065a178c0",
		"ext":             "82a474797065a178a165d40100",
		"truncated":       "82a474797065a178a165",
		"channel not str": "82a474797065a178b05f5f617367695f6368616e6e656c5f5f01",
	} {
		if _, _, err := decodeMessage(unhex(t, bad)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestEncryption(t *testing.T) {
	c, err := newCrypter([]string{"new", "old"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := newCrypter([]string{"old"}, time.Minute)
	other, _ := newCrypter([]string{"other"}, time.Minute)
	plain := []byte("hello")
	for name, tok := range map[string][]byte{"first key": c.seal(plain), "rotated key": old.seal(plain)} {
		got, err := c.open(tok)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if _, err := other.open(c.seal(plain)); err == nil {
		t.Error("opened with the wrong key")
	}
	if _, err := newCrypter([]string{""}, 0); err == nil {
		t.Error("accepted an empty key")
	}
}

// FuzzDecodeMessage feeds the decoder of bytes read from Redis. Whatever
// it accepts must encode again and decode to the same message.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{capturedPubSub, capturedCore[2*randomPrefixLen:], capturedTwo[2*randomPrefixLen:]} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		chans, msg, err := decodeMessage(data)
		if err != nil {
			return
		}
		b, err := encodeBody(msg)
		if err != nil {
			t.Fatalf("decoded %s but cannot encode it: %v", msg, err)
		}
		chans2, msg2, err := decodeMessage(b.frame(chans))
		if err != nil || msg2.String() != msg.String() || !slices.Equal(chans, chans2) {
			t.Fatalf("round trip changed %s %q into %s %q (%v)", msg, chans, msg2, chans2, err)
		}
	})
}

func mustParse(t *testing.T, s string) channellayer.Message {
	t.Helper()
	m, err := channellayer.ParseMessage([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
