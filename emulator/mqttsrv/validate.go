package mqttsrv

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// errUnacceptableProtocol marks a CONNECT for another protocol version: §3.1.2.2 wants CONNACK 0x01 before
// the connection is closed, and the rest of such a packet is not parsed since its format may differ.
var errUnacceptableProtocol = errors.New("unacceptable protocol version")

// CONNECT flags (§3.1.2.3).
const (
	connectReserved     = 0x01
	connectCleanSession = 0x02
	connectWill         = 0x04
	connectWillQoS      = 0x18
	connectWillRetain   = 0x20
	connectPassword     = 0x40
	connectUsername     = 0x80
)

// fields walks the variable header and payload of a packet; every read reports whether the bytes were there.
type fields struct{ b []byte }

func (r *fields) byte() (byte, bool) {
	if len(r.b) < 1 {
		return 0, false
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v, true
}

func (r *fields) uint16() (uint16, bool) {
	if len(r.b) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v, true
}

// prefixed reads a field with a 2-byte length prefix (§1.5.3): a string or binary data.
func (r *fields) prefixed() (string, bool) {
	n, ok := r.uint16()
	if !ok || len(r.b) < int(n) {
		return "", false
	}
	v := string(r.b[:n])
	r.b = r.b[n:]
	return v, true
}

// packetID reads a packet identifier, which must be non-zero wherever one is present (§2.3.1).
func (r *fields) packetID(kind byte) error {
	id, ok := r.uint16()
	if !ok {
		return violation("%s without a packet identifier", packetName(kind))
	}
	if id == 0 {
		return violation("%s with packet identifier 0", packetName(kind))
	}
	return nil
}

// validate checks a frame's body against MQTT 3.1.1, so that decoding it with the paho codec is safe and
// means what the client sent. The fixed header was checked by readFrame.
func (f frame) validate() error {
	r := fields{f.body}
	kind := f.kind()
	switch kind {
	case packets.Connect:
		return validateConnect(f.body)
	case packets.Publish:
		return validatePublish(f.header>>1&0x03, &r)
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		if len(f.body) != 2 {
			return violation("%s with a %d-byte body, want 2", packetName(kind), len(f.body))
		}
		return r.packetID(kind)
	case packets.Subscribe:
		return validateSubscribe(&r)
	case packets.Unsubscribe:
		return validateUnsubscribe(&r)
	case packets.Pingreq, packets.Disconnect:
		if len(f.body) != 0 {
			return violation("%s with a %d-byte body, want none", packetName(kind), len(f.body))
		}
		return nil
	}
	return violation("%s is not a client-to-server packet", packetName(kind))
}

func validatePublish(qos byte, r *fields) error {
	topic, ok := r.prefixed()
	if !ok {
		return violation("PUBLISH topic name truncated")
	}
	if err := checkTopicName(topic); err != nil {
		return violation("PUBLISH topic %q: %v", topic, err)
	}
	if qos > 0 {
		return r.packetID(packets.Publish)
	}
	return nil // the payload is the rest, any bytes, possibly none
}

func validateSubscribe(r *fields) error {
	if err := r.packetID(packets.Subscribe); err != nil {
		return err
	}
	if len(r.b) == 0 {
		return violation("SUBSCRIBE without topic filters") // §3.8.3
	}
	for len(r.b) > 0 {
		filter, ok := r.prefixed()
		if !ok {
			return violation("SUBSCRIBE topic filter truncated")
		}
		if err := checkTopicFilter(filter); err != nil {
			return violation("SUBSCRIBE topic filter %q: %v", filter, err)
		}
		qos, ok := r.byte()
		if !ok {
			return violation("SUBSCRIBE topic filter %q without requested QoS", filter)
		}
		if qos > 2 { // also catches the reserved upper bits (§3.8.3.1)
			return violation("SUBSCRIBE requested QoS byte %#x for %q", qos, filter)
		}
	}
	return nil
}

func validateUnsubscribe(r *fields) error {
	if err := r.packetID(packets.Unsubscribe); err != nil {
		return err
	}
	if len(r.b) == 0 {
		return violation("UNSUBSCRIBE without topic filters") // §3.10.3
	}
	for len(r.b) > 0 {
		filter, ok := r.prefixed()
		if !ok {
			return violation("UNSUBSCRIBE topic filter truncated")
		}
		if err := checkTopicFilter(filter); err != nil {
			return violation("UNSUBSCRIBE topic filter %q: %v", filter, err)
		}
	}
	return nil
}

// validateConnect checks a CONNECT body field by field in wire order (§3.1). It returns an error wrapping
// errUnacceptableProtocol for a known protocol at another level (MQTT 3.1's "MQIsdp", MQTT 5).
func validateConnect(body []byte) error {
	r := fields{body}
	name, ok := r.prefixed()
	if !ok {
		return violation("CONNECT protocol name truncated")
	}
	level, ok := r.byte()
	if !ok {
		return violation("CONNECT protocol level missing")
	}
	switch {
	case name == "MQTT" && level == 4:
	case name == "MQTT" || name == "MQIsdp":
		return fmt.Errorf("%w: CONNECT for %s level %d, only MQTT 3.1.1 (level 4) is served", errUnacceptableProtocol, name, level)
	default:
		return violation("CONNECT for unknown protocol %q", name)
	}
	flags, ok := r.byte()
	if !ok {
		return violation("CONNECT flags missing")
	}
	if err := checkConnectFlags(flags); err != nil {
		return err
	}
	if _, ok := r.uint16(); !ok {
		return violation("CONNECT keep-alive truncated")
	}
	clientID, ok := r.prefixed()
	if !ok {
		return violation("CONNECT client identifier truncated")
	}
	if err := checkString(clientID); err != nil {
		return violation("CONNECT client identifier %q: %v", clientID, err)
	}
	if flags&connectWill != 0 {
		topic, ok := r.prefixed()
		if !ok {
			return violation("CONNECT will topic truncated")
		}
		if err := checkTopicName(topic); err != nil {
			return violation("CONNECT will topic %q: %v", topic, err)
		}
		if _, ok := r.prefixed(); !ok {
			return violation("CONNECT will message truncated")
		}
	}
	if flags&connectUsername != 0 {
		username, ok := r.prefixed()
		if !ok {
			return violation("CONNECT username truncated")
		}
		if err := checkString(username); err != nil {
			return violation("CONNECT username %q: %v", username, err)
		}
	}
	if flags&connectPassword != 0 {
		if _, ok := r.prefixed(); !ok {
			return violation("CONNECT password truncated")
		}
	}
	if len(r.b) != 0 {
		return violation("CONNECT with %d bytes after its last field", len(r.b))
	}
	return nil
}

// checkConnectFlags applies the consistency rules of §3.1.2.3 to §3.1.2.9.
func checkConnectFlags(flags byte) error {
	switch {
	case flags&connectReserved != 0:
		return violation("CONNECT reserved flag set")
	case flags&connectWill == 0 && flags&(connectWillQoS|connectWillRetain) != 0:
		return violation("CONNECT will QoS or retain set without the will flag")
	case flags&connectWillQoS == connectWillQoS:
		return violation("CONNECT will QoS 3")
	case flags&connectPassword != 0 && flags&connectUsername == 0:
		return violation("CONNECT password flag without the username flag")
	}
	return nil
}
