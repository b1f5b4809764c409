package mqttsrv

import (
	"errors"
	"fmt"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Delivery follows one message published to the client.
type Delivery struct {
	done chan struct{}
	err  error
}

// Done is closed when the delivery is settled: at once for QoS 0 (the packet was written), on the client's
// PUBACK for QoS 1, or when the connection ends first.
func (d *Delivery) Done() <-chan struct{} { return d.done }

// Err is nil until Done is closed; then nil if the message was delivered, or an error wrapping ErrConnClosed
// if the connection ended before the PUBACK. Such a message is lost: there are no persistent sessions here,
// so it is never sent again; a front-end that models them (IoT Hub cloud-to-device) re-publishes it on the
// next connection.
func (d *Delivery) Err() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

func (d *Delivery) finish(err error) {
	d.err = err
	close(d.done)
}

// Publish sends a message to the client at QoS 0 or 1 (this server never publishes at QoS 2) and returns once
// it is written. For QoS 1 it allocates a packet identifier and the Delivery settles on the PUBACK. Publish is
// safe from any goroutine, a Session's methods included; writes are serialised, and a client that stops
// reading is disconnected after Options.WriteTimeout instead of blocking the caller longer.
func (c *Conn) Publish(topic string, payload []byte, qos byte) (*Delivery, error) {
	if err := checkTopicName(topic); err != nil {
		return nil, fmt.Errorf("publish to %q: %w", topic, err)
	}
	if qos > 1 {
		return nil, fmt.Errorf("publish to %q: QoS %d: the server publishes at QoS 0 or 1", topic, qos)
	}
	if size := 2 + len(topic) + 2 + len(payload); size > maxRemainingLength {
		return nil, fmt.Errorf("publish to %q: %d bytes exceed the MQTT packet limit", topic, size)
	}
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Payload, p.Qos = topic, payload, qos
	d := &Delivery{done: make(chan struct{})}
	if err := c.track(p, d); err != nil {
		return nil, fmt.Errorf("publish to %q: %w", topic, err)
	}
	if err := c.write(p); err != nil {
		if qos == 1 {
			c.untrack(p.MessageID)
		}
		return nil, fmt.Errorf("publish to %q: %w", topic, err)
	}
	if qos == 0 {
		d.finish(nil)
	}
	return d, nil
}

// track checks that the connection is open and, for QoS 1, registers the delivery under a free packet
// identifier before the packet is written, so that even an immediate PUBACK finds it.
func (c *Conn) track(p *packets.PublishPacket, d *Delivery) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case connecting:
		return ErrNotConnected
	case closed:
		return fmt.Errorf("%w: %w", ErrConnClosed, c.reason)
	}
	if p.Qos == 0 {
		return nil
	}
	if len(c.inflight) >= 0xffff {
		return errors.New("all 65535 packet identifiers are awaiting PUBACK")
	}
	for {
		c.lastID++
		if _, used := c.inflight[c.lastID]; c.lastID != 0 && !used {
			break
		}
	}
	p.MessageID = c.lastID
	c.inflight[p.MessageID] = d
	return nil
}

// untrack forgets a delivery whose packet could not be written.
func (c *Conn) untrack(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, id)
}

// acknowledged settles the delivery a PUBACK names. An unknown identifier is ignored: it may answer a
// message of an earlier connection, or a duplicate PUBACK.
func (c *Conn) acknowledged(id uint16) {
	c.mu.Lock()
	d, ok := c.inflight[id]
	delete(c.inflight, id)
	c.mu.Unlock()
	if ok {
		d.finish(nil)
	} else {
		c.log.Debug("PUBACK for an unknown packet identifier ignored")
	}
}
