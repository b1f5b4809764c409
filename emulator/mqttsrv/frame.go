package mqttsrv

import (
	"bytes"
	"fmt"
	"io"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// maxRemainingLength is the largest value the 4-byte remaining-length field can carry (§2.2.3).
const maxRemainingLength = 268_435_455

// frame is one control packet as received: the first byte of the fixed header (type and flags) and the
// bytes after the remaining-length field.
type frame struct {
	header byte
	body   []byte
}

func (f frame) kind() byte { return f.header >> 4 }

// packetName names a packet type for errors and logs, including the reserved types paho does not name.
func packetName(kind byte) string {
	if name, ok := packets.PacketNames[kind]; ok {
		return name
	}
	return fmt.Sprintf("reserved packet type %d", kind)
}

// violation builds an error wrapping ErrProtocolViolation.
func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocolViolation, fmt.Sprintf(format, args...))
}

// readFrame reads the rest of a packet whose first byte has arrived. The client controls every byte, so the
// fixed header is checked before anything else is read, and the announced size against maxSize (whole
// packet, fixed header included) before the body is allocated: a 4-byte length can announce 256 MB.
func readFrame(first byte, r byteReader, maxSize int) (frame, error) {
	if err := checkFixedHeader(first); err != nil {
		return frame{}, err
	}
	name := packetName(first >> 4)
	n, lenSize, err := readRemainingLength(r)
	if err != nil {
		return frame{}, fmt.Errorf("read %s remaining length: %w", name, err)
	}
	if size := 1 + lenSize + n; size > maxSize {
		return frame{}, fmt.Errorf("%w: %w: %s of %d bytes, the limit is %d",
			ErrProtocolViolation, ErrPacketTooLarge, name, size, maxSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return frame{}, fmt.Errorf("read the %d-byte body of %s: %w", n, name, err)
	}
	return frame{header: first, body: body}, nil
}

// byteReader is what readFrame reads from: a bufio.Reader in the server, a bytes.Reader in fuzz tests.
type byteReader interface {
	io.Reader
	io.ByteReader
}

// readRemainingLength decodes the variable-length integer of §2.2.3, at most 4 bytes. Non-minimal encodings
// are accepted: 3.1.1, unlike MQTT 5, does not forbid them.
func readRemainingLength(r io.ByteReader) (value, size int, err error) {
	multiplier := 1
	for size < 4 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, size, err
		}
		size++
		value += int(b&0x7f) * multiplier
		if b&0x80 == 0 {
			return value, size, nil
		}
		multiplier *= 128
	}
	return 0, size, violation("remaining length longer than 4 bytes")
}

// checkFixedHeader applies §2.2.2: the flags each packet type must carry, and which types a client may send.
func checkFixedHeader(h byte) error {
	kind, flags := h>>4, h&0x0f
	want := byte(0)
	switch kind {
	case packets.Publish:
		qos := flags >> 1 & 0x03
		if qos == 3 {
			return violation("PUBLISH with QoS 3")
		}
		if qos == 0 && flags&0x08 != 0 {
			return violation("QoS 0 PUBLISH with DUP set") // §3.3.1.1
		}
		return nil
	case packets.Pubrel, packets.Subscribe, packets.Unsubscribe:
		want = 0x02
	case packets.Connect, packets.Puback, packets.Pubrec, packets.Pubcomp, packets.Pingreq, packets.Disconnect:
	default:
		return violation("%s is not a client-to-server packet", packetName(kind))
	}
	if flags != want {
		return violation("%s with fixed-header flags %#x, want %#x", packetName(kind), flags, want)
	}
	return nil
}

// decode hands a validated frame to the paho codec. bytes.Buffer, not bytes.Reader, because paho reads
// zero-length fields with Read, which bytes.Reader answers with io.EOF at the end of the input.
func (f frame) decode() (packets.ControlPacket, error) {
	cp, err := packets.NewControlPacketWithHeader(packets.FixedHeader{
		MessageType:     f.kind(),
		Dup:             f.header&0x08 != 0,
		Qos:             f.header >> 1 & 0x03,
		Retain:          f.header&0x01 != 0,
		RemainingLength: len(f.body),
	})
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", packetName(f.kind()), err)
	}
	if err := cp.Unpack(bytes.NewBuffer(f.body)); err != nil {
		return nil, fmt.Errorf("decode %s: %w", packetName(f.kind()), err)
	}
	return cp, nil
}
