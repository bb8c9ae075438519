package main

import (
	"encoding/binary"
	"errors"
)

// frameParser takes server frames out of a byte stream that arrives in
// pieces of any size, as the epoll reader's reads deliver it. It keeps
// only what a piece left unfinished: a frame header, and the payload
// received so far of a frame split across pieces or of a fragmented
// message. A frame that arrives whole is handed out in place, so the
// usual case copies nothing and a connection costs a few dozen bytes
// besides the payloads it is waiting for.
type frameParser struct {
	hdr  [10]byte // a header split across pieces: at most 2 bytes and an 8-byte length (server frames are unmasked)
	nhdr int      // bytes of hdr filled

	inFrame bool // the current frame's header is parsed, its payload is coming
	fin     bool
	op      byte
	left    int // payload bytes of the current frame still to come
	start   int // where the current frame's payload starts in msg: after the message's earlier fragments

	msg []byte // payloads received so far that wait for the rest of their frame or message
	// What the last call handed out of msg is dropped at the next one:
	// msg is cut back to keep.
	handedOut bool
	keep      int
}

// maxFrame bounds a server frame, as the goroutine reader does.
const maxFrame = 16 << 20

// keepMsgCap is the largest msg buffer kept once empty: a rare large
// message should not hold its memory on one of thousands of connections.
const keepMsgCap = 64 << 10

var errBadFrame = errors.New("bad frame from server")

// next returns the first complete frame in p: a control frame, or the
// last frame of a data message together with the whole message's
// payload (its op is then that frame's opcode, 0 for the end of a
// fragmented message). rest is what follows it in p. ok is false when p
// ended first; what p held is then kept for the next piece. payload is
// valid until the next call and until p is overwritten.
func (f *frameParser) next(p []byte) (op byte, payload, rest []byte, ok bool, err error) {
	if f.handedOut {
		f.msg = f.msg[:f.keep]
		if f.keep == 0 && cap(f.msg) > keepMsgCap {
			f.msg = nil
		}
		f.handedOut = false
	}
	for {
		if !f.inFrame {
			if p, err = f.header(p); err != nil || !f.inFrame {
				return 0, nil, nil, false, err
			}
		}
		control := f.op&0x8 != 0
		if f.left <= len(p) && len(f.msg) == f.start && (control || f.fin && f.start == 0) {
			// The whole frame is in p and none of its message is
			// buffered: hand it out in place.
			f.inFrame = false
			return f.op, p[:f.left], p[f.left:], true, nil
		}
		k := min(f.left, len(p))
		f.msg = append(f.msg, p[:k]...)
		p = p[k:]
		f.left -= k
		if f.left > 0 {
			return 0, nil, nil, false, nil
		}
		f.inFrame = false
		switch {
		case control:
			f.handedOut, f.keep = true, f.start
			return f.op, f.msg[f.start:], p, true, nil
		case f.fin:
			f.handedOut, f.keep = true, 0
			return f.op, f.msg, p, true, nil
		}
		// A fragment (FIN=0): its payload waits in msg for the rest of
		// its message.
	}
}

// header parses the current frame's header from the front of p, or
// gathers what p has of it in f.hdr, and returns the rest of p.
func (f *frameParser) header(p []byte) ([]byte, error) {
	var h []byte
	if f.nhdr == 0 && len(p) >= 2 && len(p) >= headerLen(p[1]) {
		h, p = p[:headerLen(p[1])], p[headerLen(p[1]):]
	} else {
		if f.nhdr < 2 {
			k := copy(f.hdr[f.nhdr:2], p)
			f.nhdr += k
			p = p[k:]
			if f.nhdr < 2 {
				return p, nil
			}
		}
		k := copy(f.hdr[f.nhdr:headerLen(f.hdr[1])], p)
		f.nhdr += k
		p = p[k:]
		if f.nhdr < headerLen(f.hdr[1]) {
			return p, nil
		}
		h = f.hdr[:f.nhdr]
		f.nhdr = 0
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		n = binary.BigEndian.Uint64(h[2:])
	}
	if h[1]&0x80 != 0 || n > maxFrame {
		return p, errBadFrame
	}
	f.inFrame, f.fin, f.op, f.left, f.start = true, h[0]&0x80 != 0, h[0]&0x0f, int(n), len(f.msg)
	return p, nil
}

// headerLen is the length of a server frame's header from its second
// byte: the 7-bit length, or 126 and 2 bytes, or 127 and 8.
func headerLen(b1 byte) int {
	switch b1 & 0x7f {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}
