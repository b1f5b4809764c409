package mqttsrv

import (
	"bytes"
	"errors"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

const fuzzMaxPacket = 1024

// wellFormedPackets are packets of every client-to-server type, most written by paho.
func wellFormedPackets(t testing.TB) [][]byte {
	encode := func(p packets.ControlPacket) []byte {
		var b bytes.Buffer
		if err := p.Write(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	connect := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	connect.ProtocolName, connect.ProtocolVersion, connect.CleanSession = "MQTT", 4, true
	connect.ClientIdentifier, connect.Keepalive = "reg-1", 240
	connect.UsernameFlag, connect.Username = true, "0ne00000001/registrations/reg-1/api-version=2025-07-01-preview"
	connect.PasswordFlag, connect.Password = true, []byte("SharedAccessSignature sr=x&sig=y&se=1")
	connect.WillFlag, connect.WillTopic, connect.WillMessage, connect.WillQos = true, "devices/d/messages/events/", []byte("bye"), 1
	bare := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	bare.ProtocolName, bare.ProtocolVersion, bare.CleanSession = "MQTT", 4, true
	bare.UsernameFlag, bare.PasswordFlag = true, true // empty username and password, as X.509 DPS clients may send

	publish := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	publish.TopicName, publish.Qos, publish.MessageID, publish.Payload = "$dps/registrations/PUT/iotdps-register/?$rid=1", 1, 1, []byte(`{"registrationId":"reg-1"}`)
	subscribe := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	subscribe.MessageID, subscribe.Topics, subscribe.Qoss = 2, []string{"$dps/registrations/res/#", "a/+/b"}, []byte{1, 2}
	unsubscribe := packets.NewControlPacket(packets.Unsubscribe).(*packets.UnsubscribePacket)
	unsubscribe.MessageID, unsubscribe.Topics = 3, []string{"a/+/b"}
	return [][]byte{
		encode(connect), encode(bare), encode(publish), encode(subscribe), encode(unsubscribe),
		pkt(0xc0), pkt(0xe0), pkt(0x30, str("t")),
		pkt(0x40, u16(9)), pkt(0x50, u16(9)), pkt(0x62, u16(9)), pkt(0x70, u16(9)), // PUBACK, PUBREC, PUBREL, PUBCOMP
	}
}

// malformedPackets each break one rule.
func malformedPackets() [][]byte {
	return [][]byte{
		connectPkt(0x02, 0, "a\x00b"), connectPkt(0x42, 0, "id", str("pw")),
		pkt(0x10, str("MQTT"), raw(5, 2), u16(0)), pkt(0x82, u16(1)), pkt(0x36, str("a"), u16(1)),
		pkt(0x30, str("a/#")), pkt(0x32, str("a"), u16(0)), pkt(0xa2, u16(1), str("a/#/b")),
		raw(0x30, 0xff, 0xff, 0xff, 0xff, 0x7f), append(raw(0x30), remainingLength(200<<20)...),
	}
}

func seedPackets(t testing.TB) [][]byte { return append(wellFormedPackets(t), malformedPackets()...) }

// The seeds are what they claim, so the fuzz targets start from both sides of every rule.
func TestSeedPackets(t *testing.T) {
	accepted := func(b []byte) bool {
		r := bytes.NewReader(b)
		first, _ := r.ReadByte()
		f, err := readFrame(first, r, fuzzMaxPacket)
		return err == nil && r.Len() == 0 && f.validate() == nil
	}
	for _, p := range wellFormedPackets(t) {
		if !accepted(p) {
			t.Errorf("well-formed % x refused", p)
		}
	}
	for _, p := range malformedPackets() {
		if accepted(p) {
			t.Errorf("malformed % x accepted", p)
		}
	}
}

// FuzzReadFrame: whatever the bytes, the reader never panics and never allocates a body above the cap, and a
// packet it accepts means the same to the paho codec: paho decodes it and writes it back byte for byte.
func FuzzReadFrame(f *testing.F) {
	seeds := seedPackets(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(bytes.Join(wellFormedPackets(f), nil)) // a whole session's worth, back to back
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			first, err := r.ReadByte()
			if err != nil {
				return
			}
			before := r.Len()
			fr, err := readFrame(first, r, fuzzMaxPacket)
			if errors.Is(err, ErrPacketTooLarge) && before-r.Len() > 4 {
				t.Fatalf("read %d bytes past the header of a packet refused as too large", before-r.Len())
			}
			if err != nil {
				return
			}
			if cap(fr.body) > fuzzMaxPacket {
				t.Fatalf("allocated %d bytes with a cap of %d", cap(fr.body), fuzzMaxPacket)
			}
			if fr.validate() != nil {
				return // the server closes the connection here
			}
			frame := append(append([]byte{fr.header}, remainingLength(len(fr.body))...), fr.body...)
			cp, err := packets.ReadPacket(bytes.NewReader(frame))
			if err != nil {
				t.Fatalf("accepted % x, which paho cannot decode: %v", frame, err)
			}
			var again bytes.Buffer
			if err := cp.Write(&again); err != nil {
				t.Fatalf("paho cannot re-encode %v: %v", cp, err)
			}
			if !bytes.Equal(again.Bytes(), frame) {
				t.Fatalf("accepted % x, which paho decodes as %v (% x)", frame, cp, again.Bytes())
			}
			if _, err := fr.decode(); err != nil {
				t.Fatalf("accepted % x, which the server cannot decode: %v", frame, err)
			}
		}
	})
}

// FuzzValidateConnect: a CONNECT body either is refused, or is MQTT 3.1.1 with sound strings that paho
// decodes to the same fields.
func FuzzValidateConnect(f *testing.F) {
	for _, s := range seedPackets(f) {
		if s[0] == 0x10 {
			f.Add(s[1+len(remainingLength(len(s)-2)):])
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if validateConnect(body) != nil {
			return
		}
		cp, err := frame{header: 0x10, body: body}.decode()
		if err != nil {
			t.Fatalf("accepted CONNECT % x, which paho cannot decode: %v", body, err)
		}
		c := cp.(*packets.ConnectPacket)
		if c.ProtocolName != "MQTT" || c.ProtocolVersion != 4 || c.ReservedBit != 0 {
			t.Fatalf("accepted %s level %d reserved %d", c.ProtocolName, c.ProtocolVersion, c.ReservedBit)
		}
		if c.PasswordFlag && !c.UsernameFlag || !c.WillFlag && (c.WillQos != 0 || c.WillRetain) || c.WillQos > 2 {
			t.Fatalf("accepted inconsistent flags: %v", c)
		}
		for _, s := range []string{c.ClientIdentifier, c.Username} {
			if checkString(s) != nil {
				t.Fatalf("accepted string %q", s)
			}
		}
		if c.WillFlag && checkTopicName(c.WillTopic) != nil {
			t.Fatalf("accepted will topic %q", c.WillTopic)
		}
		var again bytes.Buffer
		if err := c.Write(&again); err != nil {
			t.Fatal(err)
		}
		if want := pkt(0x10, body); !bytes.Equal(again.Bytes(), want) {
			t.Fatalf("accepted % x, which paho reads as %v", body, c)
		}
	})
}
