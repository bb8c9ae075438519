package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// serverFrame encodes an unmasked frame with its length in the given
// form: 0 for the 7-bit length, 126 or 127 for the extended ones (a
// server may use a longer form than it needs).
func serverFrame(fin bool, op byte, payload string, form int) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch form {
	case 0:
		f = append(f, byte(len(payload)))
	case 126:
		f = append(f, 126)
		f = binary.BigEndian.AppendUint16(f, uint16(len(payload)))
	case 127:
		f = append(f, 127)
		f = binary.BigEndian.AppendUint64(f, uint64(len(payload)))
	}
	return append(f, payload...)
}

type parsed struct {
	op      byte
	payload string
}

// parseInPieces feeds stream to a frameParser cut at the given offsets,
// each piece through one reused buffer that is scribbled over after use,
// as the epoll reader's shared read buffer is.
func parseInPieces(stream []byte, cuts []int) ([]parsed, error) {
	var f frameParser
	var got []parsed
	buf := make([]byte, len(stream))
	from := 0
	for _, to := range append(cuts, len(stream)) {
		piece := buf[:copy(buf, stream[from:to])]
		from = to
		p := piece
		for {
			op, payload, rest, ok, err := f.next(p)
			if err != nil {
				return got, err
			}
			if !ok {
				break
			}
			got = append(got, parsed{op, string(payload)})
			p = rest
		}
		for i := range piece {
			piece[i] = 0xee
		}
	}
	if f.inFrame || f.nhdr > 0 {
		return got, errors.New("stream ended inside a frame")
	}
	return got, nil
}

func TestFrameParserPieces(t *testing.T) {
	long := strings.Repeat("a", 200) + "@t=1"
	longer := strings.Repeat("b", 300)
	join := func(frames ...[]byte) []byte {
		var s []byte
		for _, f := range frames {
			s = append(s, f...)
		}
		return s
	}
	cases := []struct {
		name   string
		stream []byte
		want   []parsed
	}{
		{
			name:   "short text frames",
			stream: join(serverFrame(true, 0x1, "hello", 0), serverFrame(true, 0x1, "world!", 0)),
			want:   []parsed{{0x1, "hello"}, {0x1, "world!"}},
		},
		{
			name:   "16-bit and 64-bit lengths",
			stream: join(serverFrame(true, 0x1, long, 126), serverFrame(true, 0x2, longer, 127), serverFrame(true, 0x1, "x", 126)),
			want:   []parsed{{0x1, long}, {0x2, longer}, {0x1, "x"}},
		},
		{
			name: "pings and pongs between data frames",
			stream: join(serverFrame(true, 0x1, "one", 0), serverFrame(true, 0x9, "ping", 0), serverFrame(true, 0xA, "", 0),
				serverFrame(true, 0x1, long, 126), serverFrame(true, 0x9, "", 0)),
			want: []parsed{{0x1, "one"}, {0x9, "ping"}, {0xA, ""}, {0x1, long}, {0x9, ""}},
		},
		{
			name: "fragmented message with a ping inside",
			stream: join(serverFrame(false, 0x1, "frag-", 0), serverFrame(true, 0x9, "p", 0), serverFrame(false, 0x0, long, 126),
				serverFrame(false, 0x0, "", 0), serverFrame(true, 0x0, "-end", 127), serverFrame(true, 0x1, "after", 0)),
			want: []parsed{{0x9, "p"}, {0x0, "frag-" + long + "-end"}, {0x1, "after"}},
		},
		{
			name:   "empty message and close",
			stream: join(serverFrame(true, 0x1, "", 0), serverFrame(true, 0x8, "\x03\xe8bye", 0)),
			want:   []parsed{{0x1, ""}, {0x8, "\x03\xe8bye"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, cuts []int) {
				t.Helper()
				got, err := parseInPieces(tc.stream, cuts)
				if err != nil {
					t.Fatalf("%s: %v (after %d frames)", how, err, len(got))
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf("%s:\n got %q\nwant %q", how, got, tc.want)
				}
			}
			check("whole", nil)
			for i := 1; i < len(tc.stream); i++ {
				check(fmt.Sprintf("cut at %d", i), []int{i})
			}
			var every []int
			for i := 1; i < len(tc.stream); i++ {
				every = append(every, i)
			}
			check("byte by byte", every)
		})
	}
}

func TestFrameParserLargeFrame(t *testing.T) {
	// A payload over 64 KiB needs the 64-bit length and spans many reads.
	big := strings.Repeat("0123456789abcdef", 5000)
	stream := append(serverFrame(true, 0x2, big, 127), serverFrame(true, 0x1, "next", 0)...)
	for _, size := range []int{1, 3, 4096, 65536} {
		var cuts []int
		for i := size; i < len(stream); i += size {
			cuts = append(cuts, i)
		}
		got, err := parseInPieces(stream, cuts)
		if err != nil {
			t.Fatalf("pieces of %d: %v", size, err)
		}
		if len(got) != 2 || got[0].payload != big || got[1] != (parsed{0x1, "next"}) {
			t.Fatalf("pieces of %d: got %d frames", size, len(got))
		}
	}
}

func TestFrameParserBadFrames(t *testing.T) {
	masked := []byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}
	huge := binary.BigEndian.AppendUint64([]byte{0x82, 127}, maxFrame+1)
	for name, stream := range map[string][]byte{"masked": masked, "too large": huge} {
		if _, err := parseInPieces(stream, []int{1}); !errors.Is(err, errBadFrame) {
			t.Errorf("%s: got %v, want %v", name, err, errBadFrame)
		}
	}
}
