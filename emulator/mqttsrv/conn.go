package mqttsrv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"go.uber.org/zap"
)

// Conn is one client connection. Its methods are safe to call from any goroutine.
type Conn struct {
	srv *Server
	nc  net.Conn // as accepted: a *tls.Conn on a TLS listener
	// raw is the transport under TLS (nc itself without TLS). Closing it aborts a blocked read or write at
	// once, where tls.Conn.Close would first try to send close_notify.
	raw    net.Conn
	br     *bufio.Reader
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	// Set on the connection goroutine before the Handler sees the Conn, read-only afterwards.
	log      *zap.Logger
	clientID string

	wmu sync.Mutex // serialises writes, so packets from several goroutines never interleave

	mu       sync.Mutex
	state    connState
	reason   error // why the connection ends; the first one recorded wins
	inflight map[uint16]*Delivery
	lastID   uint16
}

type connState int

const (
	connecting connState = iota // CONNACK not sent yet
	connected
	closed
)

func newConn(s *Server, nc net.Conn) *Conn {
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	return &Conn{
		srv:      s,
		nc:       nc,
		raw:      raw,
		br:       bufio.NewReader(nc),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		log:      s.log.With(zap.Stringer("remote", nc.RemoteAddr())),
		inflight: make(map[uint16]*Delivery),
	}
}

// ClientID is the client identifier from CONNECT ("" before it has been read).
func (c *Conn) ClientID() string { return c.clientID }

// RemoteAddr is the client's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done is closed when the connection has ended and Session.Closed has returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close ends the connection now, without a TLS close_notify (a blocked write must not delay it). reason is
// what Session.Closed will see unless another reason came first; nil means ErrConnClosed. It does not wait:
// use Done for that.
func (c *Conn) Close(reason error) {
	if reason == nil {
		reason = ErrConnClosed
	}
	c.ending(reason)
	c.cancel(reason)
	c.raw.Close()
}

// ending records why the connection ends, unless a reason is already known (when Close aborts a read, the
// read error that follows is a consequence, not the cause), and refuses further publishes. It returns the
// reason that stands.
func (c *Conn) ending(reason error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason == nil {
		c.reason = reason
	}
	c.state = closed
	return c.reason
}

// serve runs the connection from the TLS handshake to teardown. It is the only goroutine that reads from the
// client or calls the Session.
func (c *Conn) serve() {
	session, keepAlive, err := c.open()
	if err == nil {
		if st, ok := session.(Starter); ok {
			st.Started()
		}
		err = c.readLoop(session, keepAlive)
	}
	c.finish(session, err)
}

// open completes the TLS handshake, reads the CONNECT, asks the Handler and sends the CONNACK. A non-nil
// Session is returned even with an error when it was accepted, so that its Closed is still called.
func (c *Conn) open() (Session, time.Duration, error) {
	deadline := time.Now().Add(c.srv.opts.ConnectTimeout)
	if err := c.nc.SetDeadline(deadline); err != nil {
		return nil, 0, fmt.Errorf("set connect deadline: %w", err)
	}
	var tlsState *tls.ConnectionState
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil { // Close aborts it by closing raw
			return nil, 0, fmt.Errorf("TLS handshake: %w", err)
		}
		st := tc.ConnectionState()
		tlsState = &st
	}
	connect, err := c.readConnect(deadline)
	if errors.Is(err, errUnacceptableProtocol) {
		return nil, 0, errors.Join(err, c.writeConnack(RefusedProtocolVersion, false))
	}
	if err != nil {
		return nil, 0, err
	}

	req := newConnectRequest(connect, tlsState, c)
	c.clientID = req.ClientID
	c.log = c.log.With(zap.String("client_id", req.ClientID))
	if req.ClientID == "" && !req.CleanSession {
		// §3.1.3.1: a zero-length identifier needs a clean session; the server answers, not the handler.
		err := fmt.Errorf("empty client identifier without CleanSession: %s", RefusedIdentifierRejected)
		return nil, 0, errors.Join(err, c.writeConnack(RefusedIdentifierRejected, false))
	}

	keepAlive := req.KeepAlive // what the client asked for, whatever the handler does with req
	session, code := c.srv.opts.Handler.Connect(c.ctx, req)
	switch {
	case code > maxConnackCode:
		c.log.Error("handler returned a reserved CONNACK code; refusing as server unavailable", zap.Uint8("code", byte(code)))
		code, session = RefusedServerUnavailable, nil
	case code == Accepted && session == nil:
		c.log.Error("handler accepted the connection without a session; refusing as server unavailable")
		code = RefusedServerUnavailable
	case code != Accepted:
		session = nil
	}
	present := false
	if sp, ok := session.(SessionPresenter); ok && !req.CleanSession {
		present = sp.SessionPresent()
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return session, 0, fmt.Errorf("clear connect deadline: %w", err)
	}
	if err := c.writeConnack(code, present); err != nil {
		return session, 0, err
	}
	if code != Accepted {
		return nil, 0, fmt.Errorf("connection refused by the handler: %s", code)
	}
	c.log.Info("client connected", zap.Bool("clean_session", req.CleanSession),
		zap.Duration("keep_alive", keepAlive), zap.Bool("session_present", present))
	return session, keepAlive, nil
}

// readConnect reads the first packet, which must be a CONNECT (§3.1), before deadline.
func (c *Conn) readConnect(deadline time.Time) (*packets.ConnectPacket, error) {
	first, err := c.br.ReadByte()
	if err != nil {
		return nil, fmt.Errorf("wait for CONNECT: %w", err)
	}
	if kind := first >> 4; kind != packets.Connect {
		return nil, violation("%s before CONNECT", packetName(kind))
	}
	f, err := c.readPacket(first, deadline)
	if err != nil {
		return nil, err
	}
	cp, err := f.decode()
	if err != nil {
		return nil, err
	}
	return cp.(*packets.ConnectPacket), nil
}

// readPacket reads and validates the rest of a packet whose first byte has arrived, by finishBy.
func (c *Conn) readPacket(first byte, finishBy time.Time) (frame, error) {
	if err := c.nc.SetReadDeadline(finishBy); err != nil {
		return frame{}, fmt.Errorf("set read deadline: %w", err)
	}
	f, err := readFrame(first, c.br, c.srv.opts.MaxPacketSize)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return frame{}, fmt.Errorf("%s not received in time: %w", packetName(first>>4), err)
	}
	if err != nil {
		return frame{}, err
	}
	if err := f.validate(); err != nil {
		return frame{}, err
	}
	return f, nil
}

func newConnectRequest(p *packets.ConnectPacket, tlsState *tls.ConnectionState, c *Conn) *ConnectRequest {
	req := &ConnectRequest{
		ClientID:     p.ClientIdentifier,
		Username:     p.Username,
		HasUsername:  p.UsernameFlag,
		Password:     p.Password,
		HasPassword:  p.PasswordFlag,
		CleanSession: p.CleanSession,
		KeepAlive:    time.Duration(p.Keepalive) * time.Second,
		TLS:          tlsState,
		RemoteAddr:   c.RemoteAddr(),
		Conn:         c,
	}
	if p.WillFlag {
		req.Will = &Message{Topic: p.WillTopic, Payload: p.WillMessage, QoS: p.WillQos, Retain: p.WillRetain}
	}
	return req
}

// writeConnack sends the CONNACK; an accepted one opens the connection to Publish. The state changes under
// the write lock, before the write: a client may act on the CONNACK at once (and a front-end publish to it),
// and such a publish must then neither fail nor overtake the CONNACK.
func (c *Conn) writeConnack(code ConnackCode, sessionPresent bool) error {
	p := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
	p.ReturnCode = byte(code)
	p.SessionPresent = sessionPresent
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if code == Accepted {
		c.mu.Lock()
		if c.state == connecting { // not if Close came first
			c.state = connected
		}
		c.mu.Unlock()
	}
	return c.writeLocked(p)
}

// write sends one packet.
func (c *Conn) write(p packets.ControlPacket) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(p)
}

// writeLocked sends one packet with wmu held. A failed or timed-out write may have left part of a packet on
// the wire, so it ends the connection.
func (c *Conn) writeLocked(p packets.ControlPacket) error {
	err := c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	if err == nil {
		err = p.Write(c.nc)
	}
	if err != nil {
		err = fmt.Errorf("write %T to client: %w", p, err)
		c.Close(err)
		return err
	}
	return nil
}

// finish tears the connection down: no more publishes, unacknowledged ones failed, the transport closed,
// the context cancelled, then the Session told.
func (c *Conn) finish(session Session, err error) {
	if err == nil {
		err = ErrConnClosed // not expected: serve always has a reason; Closed must get one
	}
	reason := c.ending(err)
	c.mu.Lock()
	lost := c.inflight
	c.inflight = nil
	c.mu.Unlock()

	for _, d := range lost {
		d.finish(fmt.Errorf("%w before PUBACK: %w", ErrConnClosed, reason))
	}
	// Holding wmu lets a publish in progress finish, so close_notify does not cut a packet in half.
	c.wmu.Lock()
	c.nc.Close()
	c.wmu.Unlock()
	c.raw.Close()
	c.cancel(reason)

	// Info even without a session: a failed handshake or a refused CONNECT is what a device developer
	// looks for.
	c.log.Info("connection closed", zap.NamedError("reason", reason), zap.Bool("had_session", session != nil),
		zap.Int("unacknowledged", len(lost)))
	if session != nil {
		session.Closed(reason)
	}
	c.srv.forget(c)
	close(c.done)
}
