package mqttsrv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"go.uber.org/zap"
)

// readLoop reads packets after the CONNACK and dispatches them until the connection ends; the error says
// why. qos2 holds the packet identifiers of QoS 2 messages delivered to the session and awaiting PUBREL.
func (c *Conn) readLoop(s Session, keepAlive time.Duration) error {
	qos2 := make(map[uint16]struct{})
	for {
		f, err := c.next(keepAlive)
		if err != nil {
			return err
		}
		cp, err := f.decode()
		if err != nil {
			return err
		}
		if err := c.dispatch(s, cp, qos2); err != nil {
			return err
		}
	}
}

// next waits for the next packet. With a keep-alive, the client must start one within 1.5 times it
// (§3.1.2.10), counted from when the server is ready to read: a slow session must not expire a client.
func (c *Conn) next(keepAlive time.Duration) (frame, error) {
	var idle time.Time
	if keepAlive > 0 {
		idle = time.Now().Add(keepAlive * 3 / 2)
	}
	if err := c.nc.SetReadDeadline(idle); err != nil {
		return frame{}, fmt.Errorf("set keep-alive deadline: %w", err)
	}
	first, err := c.br.ReadByte()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return frame{}, fmt.Errorf("%w: nothing received for %s (keep-alive %s)", ErrKeepAliveTimeout, keepAlive*3/2, keepAlive)
	case errors.Is(err, io.EOF):
		return frame{}, fmt.Errorf("client closed the connection without DISCONNECT: %w", err)
	case err != nil:
		return frame{}, fmt.Errorf("read from client: %w", err)
	}
	return c.readPacket(first, time.Now().Add(c.srv.opts.PacketTimeout))
}

// dispatch acts on one decoded packet. Acknowledgements are written here, after the session has answered,
// so they go out in the order the packets came in (§4.6).
func (c *Conn) dispatch(s Session, cp packets.ControlPacket, qos2 map[uint16]struct{}) error {
	switch p := cp.(type) {
	case *packets.PublishPacket:
		return c.receivePublish(s, p, qos2)
	case *packets.PubackPacket:
		c.acknowledged(p.MessageID)
		return nil
	case *packets.PubrelPacket:
		// PUBCOMP even for an unknown identifier: it may be a PUBREL resent after our PUBCOMP was lost.
		delete(qos2, p.MessageID)
		return c.write(&packets.PubcompPacket{FixedHeader: packets.FixedHeader{MessageType: packets.Pubcomp}, MessageID: p.MessageID})
	case *packets.PubrecPacket, *packets.PubcompPacket:
		// The server never publishes at QoS 2, so there is nothing to continue.
		c.log.Debug("ignoring acknowledgement of a QoS 2 flow the server never started", zap.Stringer("packet", p))
		return nil
	case *packets.SubscribePacket:
		return c.receiveSubscribe(s, p)
	case *packets.UnsubscribePacket:
		if u, ok := s.(Unsubscriber); ok {
			u.Unsubscribe(p.Topics)
		}
		return c.write(&packets.UnsubackPacket{FixedHeader: packets.FixedHeader{MessageType: packets.Unsuback}, MessageID: p.MessageID})
	case *packets.PingreqPacket:
		return c.write(packets.NewControlPacket(packets.Pingresp))
	case *packets.DisconnectPacket:
		return ErrClientDisconnected
	case *packets.ConnectPacket:
		return violation("second CONNECT on a connection") // §3.1.0
	}
	return violation("unexpected %T", cp) // unreachable: validate admits only the cases above
}

func (c *Conn) receivePublish(s Session, p *packets.PublishPacket, qos2 map[uint16]struct{}) error {
	m := &Message{Topic: p.TopicName, Payload: p.Payload, QoS: p.Qos, Retain: p.Retain, Dup: p.Dup, PacketID: p.MessageID, acked: make(chan struct{})}
	// Closed after the acknowledgement is written, or when this returns an
	// error and the connection ends.
	defer close(m.acked)
	_, duplicate := qos2[p.MessageID]
	if p.Qos < 2 || !duplicate {
		if err := s.Publish(c.ctx, m); err != nil {
			return fmt.Errorf("session refused a QoS %d PUBLISH to %q: %w", p.Qos, p.TopicName, err)
		}
	}
	switch p.Qos {
	case 1:
		return c.write(&packets.PubackPacket{FixedHeader: packets.FixedHeader{MessageType: packets.Puback}, MessageID: p.MessageID})
	case 2:
		qos2[p.MessageID] = struct{}{}
		return c.write(&packets.PubrecPacket{FixedHeader: packets.FixedHeader{MessageType: packets.Pubrec}, MessageID: p.MessageID})
	}
	return nil
}

func (c *Conn) receiveSubscribe(s Session, p *packets.SubscribePacket) error {
	subs := make([]Subscription, len(p.Topics))
	for i, topic := range p.Topics {
		subs[i] = Subscription{Filter: topic, QoS: p.Qoss[i]}
	}
	granted := s.Subscribe(subs)
	if err := checkGranted(granted, len(subs)); err != nil {
		c.log.Error("session answered SUBSCRIBE wrongly; closing the connection", zap.Error(err))
		return err
	}
	if err := c.write(&packets.SubackPacket{
		FixedHeader: packets.FixedHeader{MessageType: packets.Suback},
		MessageID:   p.MessageID,
		ReturnCodes: granted,
	}); err != nil {
		return err
	}
	if o, ok := s.(SubscribeObserver); ok {
		var confirmed []Subscription
		for i, g := range granted {
			if g != 0x80 {
				confirmed = append(confirmed, Subscription{Filter: subs[i].Filter, QoS: g})
			}
		}
		if len(confirmed) > 0 {
			o.Subscribed(confirmed)
		}
	}
	return nil
}

// checkGranted catches a session bug before it reaches the wire as a SUBACK the client cannot parse.
func checkGranted(granted []byte, filters int) error {
	if len(granted) != filters {
		return fmt.Errorf("session granted %d codes for %d topic filters", len(granted), filters)
	}
	for _, g := range granted {
		if g > 2 && g != 0x80 {
			return fmt.Errorf("session granted code %#x; valid codes are 0, 1, 2 and 0x80", g)
		}
	}
	return nil
}
