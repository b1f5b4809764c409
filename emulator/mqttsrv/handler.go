package mqttsrv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"
)

// Handler decides whether to accept a connection. A front-end (DPS, hub) implements it.
type Handler interface {
	// Connect is called once per connection with a validated CONNECT. To accept, return a Session and
	// Accepted; any other code is sent in the CONNACK and the connection is closed (the Session is then
	// ignored). ctx lives as long as the connection and is cancelled when it ends, so a session may keep it.
	// Connect runs on the connection's goroutine: nothing is read from the client until it returns.
	Connect(ctx context.Context, req *ConnectRequest) (Session, ConnackCode)
}

// Session is one accepted connection as its front-end sees it. The server calls its methods from a single
// goroutine, one at a time, so a session needs no lock for its own state. While a method runs nothing is read
// from the client, so long work (an injected delay, say) belongs in a goroutine that answers later with
// Conn.Publish.
type Session interface {
	// Subscribe returns one code per filter, in order: the granted QoS (0, 1 or 2) or 0x80 for failure.
	// DPS grants a requested QoS 2 as 1. Any other answer is a bug and closes the connection.
	Subscribe(filters []Subscription) []byte
	// Publish receives a message from the client. The PUBACK (QoS 1) or PUBREC (QoS 2) is sent only after
	// it returns nil; an error closes the connection without acknowledging, and is the reason Closed sees.
	// IoT Hub closes the connection on a QoS 2 publish: such a session returns an error when m.QoS == 2.
	// A duplicate QoS 2 message (same packet identifier, before PUBREL) is not delivered again.
	Publish(ctx context.Context, m *Message) error
	// Closed is called exactly once, last, when the connection has ended. The reason wraps
	// ErrClientDisconnected only after a DISCONNECT; every other reason means the will, if any, is due.
	Closed(reason error)
}

// Unsubscriber is implemented by sessions that want UNSUBSCRIBE; the UNSUBACK is sent either way.
type Unsubscriber interface {
	Unsubscribe(filters []string)
}

// Starter is implemented by sessions that act as soon as the client has its CONNACK: IoT Hub delivers the
// cloud-to-device messages queued for a device whose kept session (CleanSession 0) still holds its
// subscription. Started runs once, on the connection's goroutine, after the accepted CONNACK is written and
// before any packet is read; it must not block (a Conn.Publish is fine, longer work belongs in a goroutine).
type Starter interface {
	Started()
}

// SubscribeObserver is implemented by sessions that act once a subscription is confirmed: the IoT Hub
// front-end delivers queued cloud-to-device messages after the SUBACK, so that no client sees a message for a
// filter it has not yet been granted. Subscribed runs on the connection's goroutine right after the SUBACK is
// written, with the filters that SUBACK granted and their granted QoS; it must not block.
type SubscribeObserver interface {
	Subscribed(granted []Subscription)
}

// SessionPresenter is implemented by sessions that model persistent state (IoT Hub with CleanSession 0).
// Its answer is the CONNACK's session-present flag, which is always 0 when the client asked for a clean
// session (MQTT 3.1.1 §3.2.2.2).
type SessionPresenter interface {
	SessionPresent() bool
}

// ConnectRequest is a validated CONNECT together with what the transport knows about the client.
type ConnectRequest struct {
	ClientID     string
	Username     string
	HasUsername  bool // the username flag; Username may be empty even when set
	Password     []byte
	HasPassword  bool // the password flag; X.509 clients of DPS send an empty password or none
	CleanSession bool
	KeepAlive    time.Duration // 0: no keep-alive
	Will         *Message      // nil without a will; PacketID and Dup are zero
	// TLS is the completed handshake, nil on a plain listener. TLS.ServerName is the SNI host name.
	TLS        *tls.ConnectionState
	RemoteAddr net.Addr
	// Conn is the connection, for publishing to the client and closing it. Publishing before Connect has
	// returned fails with ErrNotConnected: the CONNACK must be the first packet the client receives.
	Conn *Conn
}

// PeerCertificates returns the client's certificates as presented in the TLS handshake, leaf first, not
// verified: authenticating them is the front-end's business. It is nil without TLS or without a client
// certificate (the tls.Config must set ClientAuth to ask for one, e.g. tls.RequestClientCert).
func (r *ConnectRequest) PeerCertificates() []*x509.Certificate {
	if r.TLS == nil {
		return nil
	}
	return r.TLS.PeerCertificates
}

// Message is an application message from the client (a PUBLISH, or a will).
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retain   bool
	Dup      bool
	PacketID uint16 // 0 for QoS 0

	acked chan struct{}
}

// Acknowledged is closed once the server has written this message's PUBACK
// (QoS 1) or PUBREC (QoS 2), at once for QoS 0 after Session.Publish returns,
// and when the connection ends. A front-end that answers a request waits on
// it, so its answer never reaches the client before the acknowledgement (some
// SDKs fail a request answered while they still wait for its PUBACK). It is
// nil for a will.
func (m *Message) Acknowledged() <-chan struct{} { return m.acked }

// Subscription is one topic filter of a SUBSCRIBE and the QoS the client asked for.
type Subscription struct {
	Filter string
	QoS    byte
}

// ConnackCode is the return code of a CONNACK (MQTT 3.1.1 §3.2.2.3).
type ConnackCode byte

// The CONNACK return codes of MQTT 3.1.1; 6 to 255 are reserved and never sent.
const (
	Accepted                     ConnackCode = 0
	RefusedProtocolVersion       ConnackCode = 1
	RefusedIdentifierRejected    ConnackCode = 2
	RefusedServerUnavailable     ConnackCode = 3
	RefusedBadUsernameOrPassword ConnackCode = 4
	RefusedNotAuthorized         ConnackCode = 5
)

const maxConnackCode = RefusedNotAuthorized

func (c ConnackCode) String() string {
	switch c {
	case Accepted:
		return "accepted"
	case RefusedProtocolVersion:
		return "unacceptable protocol version"
	case RefusedIdentifierRejected:
		return "identifier rejected"
	case RefusedServerUnavailable:
		return "server unavailable"
	case RefusedBadUsernameOrPassword:
		return "bad user name or password"
	case RefusedNotAuthorized:
		return "not authorized"
	}
	return fmt.Sprintf("reserved CONNACK code %d", byte(c))
}
