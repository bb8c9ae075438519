package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// The load client speaks just enough WebSocket to receive: a handshake,
// unmasked server frames read straight from a bufio.Reader into one
// reused buffer, and masked pong and close replies. It allocates nothing
// per frame, so that one client process can drive a server at hundreds of
// thousands of frames a second.

type wsConn struct {
	nc  net.Conn
	cr  *countingReader
	br  *bufio.Reader
	buf []byte
	// dropped is set when the child closes the connection before its
	// end, as the churn does: whatever its reader sees after that, even
	// the server's reply to the close, it ended by the client's doing.
	dropped atomic.Bool
}

// countingReader counts the reads from the socket, so that the receiver
// can read the clock once per read rather than once per frame: every
// frame a read brings arrived at the same moment.
type countingReader struct {
	r     io.Reader
	reads uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// readBuffer is the client's read buffer: large enough for a batch of
// frames the server sends with one write to arrive with one read.
const readBuffer = 8 << 10

// errStatus is a refused upgrade, with the HTTP status the server gave.
type errStatus int

func (e errStatus) Error() string { return fmt.Sprintf("upgrade refused: HTTP %d", int(e)) }

// dialWS opens one WebSocket to u from the source address src (nil: any).
func dialWS(ctx context.Context, u *url.URL, src net.IP, timeout time.Duration) (*wsConn, error) {
	d := net.Dialer{Timeout: timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
		d.Control = bindNoPort
	}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	path := u.RequestURI()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: aGVyYWxkLWJlbmNoLWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	cr := &countingReader{r: nc}
	br := bufio.NewReaderSize(cr, readBuffer)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, errStatus(resp.StatusCode)
	}
	_ = nc.SetDeadline(time.Time{})
	return &wsConn{nc: nc, cr: cr, br: br}, nil
}

// errClosed is returned by next when the server closed the WebSocket;
// code is its close code.
type errClosed struct{ code int }

func (e errClosed) Error() string { return fmt.Sprintf("closed by server with code %d", e.code) }

// next returns the payload of the next text or binary message, valid
// until the following call. It answers pings and close frames itself.
func (c *wsConn) next() ([]byte, error) {
	c.buf = c.buf[:0]
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
			return nil, err
		}
		fin, op, masked := hdr[0]&0x80 != 0, hdr[0]&0x0f, hdr[1]&0x80 != 0
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(c.br, hdr[:8]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(hdr[:8])
		}
		if masked || n > 16<<20 {
			return nil, errors.New("bad frame from server")
		}
		start := len(c.buf)
		if need := start + int(n); cap(c.buf) < need {
			nb := make([]byte, start, max(need, 2*cap(c.buf), 512))
			copy(nb, c.buf)
			c.buf = nb
		}
		c.buf = c.buf[:start+int(n)]
		if _, err := io.ReadFull(c.br, c.buf[start:]); err != nil {
			return nil, err
		}
		switch op {
		case 0x8: // close
			code := 1005
			if n >= 2 {
				code = int(binary.BigEndian.Uint16(c.buf[start:]))
			}
			_ = c.writeFrame(0x8, c.buf[start:min(len(c.buf), start+2)])
			c.nc.Close()
			return nil, errClosed{code}
		case 0x9: // ping
			payload := append([]byte(nil), c.buf[start:]...)
			c.buf = c.buf[:start]
			if err := c.writeFrame(0xA, payload); err != nil {
				return nil, err
			}
			continue
		case 0xA: // pong
			c.buf = c.buf[:start]
			continue
		}
		if fin {
			return c.buf, nil
		}
	}
}

var maskKey = [4]byte{0x12, 0x34, 0x56, 0x78}

// writeFrame writes one masked control or text frame of at most 125
// bytes.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	f, err := clientFrame(op, payload)
	if err != nil {
		return err
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = c.nc.Write(f)
	return err
}

// clientFrame encodes one masked control or text frame of at most 125
// bytes.
func clientFrame(op byte, payload []byte) ([]byte, error) {
	if len(payload) > 125 {
		return nil, errors.New("frame too large")
	}
	f := make([]byte, 0, 6+len(payload))
	f = append(f, 0x80|op, 0x80|byte(len(payload)))
	f = append(f, maskKey[:]...)
	for i, b := range payload {
		f = append(f, b^maskKey[i%4])
	}
	return f, nil
}

// closeNormal is the payload of a normal close: code 1000.
var closeNormal = []byte{0x03, 0xe8}

// close starts a normal close handshake and releases the socket.
func (c *wsConn) close() {
	_ = c.writeFrame(0x8, closeNormal)
	c.nc.Close()
}

// stampMarker precedes the send time, in Unix nanoseconds, inside every
// message the tool sends.
var stampMarker = []byte("@t=")

// stamp finds the send time in a received message.
func stamp(p []byte) (int64, bool) {
	i := bytes.Index(p, stampMarker)
	if i < 0 {
		return 0, false
	}
	p = p[i+len(stampMarker):]
	var v int64
	n := 0
	for n < len(p) && p[n] >= '0' && p[n] <= '9' {
		v = v*10 + int64(p[n]-'0')
		n++
	}
	return v, n > 0
}

// failCause names a failed connection attempt's cause, for the report.
func failCause(err error) string {
	var st errStatus
	var ne net.Error
	switch {
	case errors.As(err, &st):
		return "http_" + strconv.Itoa(int(st))
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_ephemeral_port"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "client_file_limit"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "other"
}
