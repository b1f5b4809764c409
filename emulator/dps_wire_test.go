package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestParseDPSRequestTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		want  dpsRequest
		err   error
	}{
		{"$dps/registrations/PUT/iotdps-register/?$rid=1", dpsRequest{Kind: dpsRegister, RequestID: "1"}, nil},
		{"$dps/registrations/PUT/iotdps-register/?x=y&$rid=ab%2Fc", dpsRequest{Kind: dpsRegister, RequestID: "ab%2Fc"}, nil},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=4.abc.def", dpsRequest{Kind: dpsPoll, RequestID: "7", OperationID: "4.abc.def"}, nil},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?operationId=4.a%2Eb&$rid=uuid-1", dpsRequest{Kind: dpsPoll, RequestID: "uuid-1", OperationID: "4.a.b"}, nil},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7", dpsRequest{Kind: dpsPoll, RequestID: "7"}, nil},
		{"$dps/registrations/PUT/iotdps-register/", dpsRequest{}, errDPSNoRequestID},
		{"$dps/registrations/PUT/iotdps-register/?$rid=", dpsRequest{}, errDPSNoRequestID},
		{"$dps/registrations/PUT/iotdps-register/?rid=1", dpsRequest{}, errDPSNoRequestID},
		{"$dps/registrations/PUT/iotdps-register/?$rid=a+b", dpsRequest{}, errDPSNoRequestID},
		{"$dps/registrations/PUT/iotdps-register?$rid=1", dpsRequest{}, errDPSTopic},
		{"$dps/registrations/PUT/iotdps-register/x?$rid=1", dpsRequest{}, errDPSTopic},
		{"$dps/registrations/POST/iotdps-register/?$rid=1", dpsRequest{}, errDPSTopic},
		{"$iothub/twin/GET/?$rid=1", dpsRequest{}, errDPSTopic},
	} {
		got, err := parseDPSRequestTopic(tc.topic)
		if got != tc.want || (tc.err == nil) != (err == nil) || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("%s: got %+v, %v; want %+v, %v", tc.topic, got, err, tc.want, tc.err)
		}
	}
}

func TestDPSResponseTopic(t *testing.T) {
	if got := dpsResponseTopic(202, "1", 3); got != "$dps/registrations/res/202/?$rid=1&retry-after=3" {
		t.Error(got)
	}
	if got := dpsResponseTopic(200, "uuid-x", 0); got != "$dps/registrations/res/200/?$rid=uuid-x" {
		t.Error(got)
	}
}

func TestParseDPSUsername(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    dpsUsername
		wantErr string
	}{
		{"0ne00000001/registrations/dev-1/api-version=2019-03-31",
			dpsUsername{IDScope: "0ne00000001", RegistrationID: "dev-1", APIVersion: dpsAPIVersion{date: "2019-03-31"}}, ""},
		{"0ne00000001/registrations/dev-1/api-version=2025-07-01-preview&ClientVersion=azure-iot-device%2F1.0%20(node)",
			dpsUsername{IDScope: "0ne00000001", RegistrationID: "dev-1", APIVersion: dpsCSRVersion, ClientVersion: "azure-iot-device/1.0 (node)"}, ""},
		// The C SDK's unencoded client version, and a stray ';' and '%'.
		{"s/registrations/d/api-version=2019-03-31&ClientVersion=123.123;x%zz",
			dpsUsername{IDScope: "s", RegistrationID: "d", APIVersion: dpsAPIVersion{date: "2019-03-31"}, ClientVersion: "123.123;x%zz"}, ""},
		{"s/registrations/d/?api-version=2021-06-01", dpsUsername{IDScope: "s", RegistrationID: "d", APIVersion: dpsAPIVersion{date: "2021-06-01"}}, ""},
		{"s/registrations/d/ClientVersion=1&api-version=2021-06-01", dpsUsername{IDScope: "s", RegistrationID: "d", APIVersion: dpsAPIVersion{date: "2021-06-01"}, ClientVersion: "1"}, ""},
		{"s/registrations/d", dpsUsername{}, "is not"},
		{"s/devices/d/api-version=2019-03-31", dpsUsername{}, "is not"},
		{"s/registrations/d/ClientVersion=1", dpsUsername{}, "no api-version"},
		{"s/registrations/d/api-version=2019-13-45", dpsUsername{}, "not a date"},
		{"s/registrations/d/api-version=latest", dpsUsername{}, "not a version"},
	} {
		got, err := parseDPSUsername(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("%q: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestDPSAPIVersionCSRSupport(t *testing.T) {
	for v, want := range map[string]bool{
		"2019-03-31":         false,
		"2021-10-01":         false,
		"2025-06-30":         false,
		"2025-07-01-preview": true,
		"2025-07-01":         true,
		"2025-08-15-preview": true,
		"2026-11-02-preview": true,
	} {
		parsed, err := parseDPSAPIVersion(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := parsed.supportsCSR(); got != want || parsed.String() != v {
			t.Errorf("%s: supportsCSR=%v (%s), want %v", v, got, parsed, want)
		}
	}
}

func TestParseDPSRegisterBody(t *testing.T) {
	for _, tc := range []struct {
		body    string
		regID   string
		csr     bool
		payload string
		code    int
	}{
		{"", "", false, "", 0},
		{"  \n", "", false, "", 0},
		{`{}`, "", false, "", 0},
		{`{"payload":{"a":1}}`, "", false, `{"a":1}`, 0},
		{`{"registrationId":"d","payload":null,"csr":"QUJD","tpm":{"endorsementKey":"x"}}`, "d", true, "", 0},
		{`{"registrationId":"d"`, "", false, "", dpsCodeMalformedJSON},
		{`[]`, "", false, "", dpsCodeInvalidField},
		{`{"csr":42}`, "", false, "", dpsCodeInvalidField},
	} {
		got, derr := parseDPSRegisterBody([]byte(tc.body))
		if tc.code != 0 {
			if derr == nil || derr.code != tc.code {
				t.Errorf("%q: error %v, want code %d", tc.body, derr, tc.code)
			}
			continue
		}
		regID := ""
		if got.RegistrationID != nil {
			regID = *got.RegistrationID
		}
		if derr != nil || regID != tc.regID || (got.CSR != nil) != tc.csr || string(got.Payload) != tc.payload {
			t.Errorf("%q: got %+v, %v", tc.body, got, derr)
		}
	}
}

func TestDPSPollLimiter(t *testing.T) {
	var l dpsPollLimiter
	l.devices = map[string][]time.Time{}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 5 {
		if ok, _ := l.allow("d", t0.Add(time.Duration(i)*time.Second), 5, 10*time.Second); !ok {
			t.Fatalf("poll %d refused", i+1)
		}
	}
	ok, wait := l.allow("d", t0.Add(4500*time.Millisecond), 5, 10*time.Second)
	if ok || wait != 5500*time.Millisecond || dpsRetryAfter(wait) != 6 {
		t.Errorf("sixth poll: ok=%v wait=%s", ok, wait)
	}
	if ok, _ := l.allow("other", t0.Add(4500*time.Millisecond), 5, 10*time.Second); !ok {
		t.Error("the limit is per device")
	}
	if ok, _ := l.allow("d", t0.Add(10*time.Second), 5, 10*time.Second); !ok {
		t.Error("the oldest poll left the window, one more is allowed")
	}
}

func TestDPSHostileJSON(t *testing.T) {
	body := dpsHostileJSON([]byte(`{"operationId":"4.x","status":"assigning"}`), dpsHostileSize)
	if len(body) != dpsHostileSize {
		t.Errorf("%d bytes, want %d", len(body), dpsHostileSize)
	}
	// Valid JSON, deeper than encoding/json (10000) goes: json.Valid says no
	// because of the depth alone.
	if json.Valid(body) {
		t.Error("encoding/json accepted the nesting")
	}
	i := bytes.Index(body, []byte(`"nested":`)) + len(`"nested":`)
	j := i
	for j < len(body) && (body[j] == '[' || body[j] == ']') {
		j++
	}
	if depth := bytes.Count(body[i:j], []byte("[")); depth != dpsHostileDepth {
		t.Errorf("nested %d deep, want %d", depth, dpsHostileDepth)
	}
	flat := append(append(bytes.Clone(body[:i]), '0'), body[j:]...)
	var v map[string]any
	if err := json.Unmarshal(flat, &v); err != nil || v["operationId"] != "4.x" {
		t.Errorf("apart from the nesting, not the true answer plus padding: %v", err)
	}
	if got := dpsHostileJSON([]byte(`{}`), 4096); !strings.HasPrefix(string(got), `{"hostile":`) || len(got) != 4096 {
		t.Errorf("from an empty object: %.40s (%d bytes)", got, len(got))
	}
}

// An answer must follow the PUBACK of its request: the C# SDK fails the
// registration when a PUBLISH arrives while it waits for its PUBACK. This
// reads the raw packets, which the paho client would hide.
func TestDPSAnswerFollowsPUBACK(t *testing.T) {
	const regID = "ordered"
	key := dpsKey("ordered")
	e, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	e.dps.pollLimit = 1000
	// Without the wait for Message.Acknowledged in dpsSession.send this
	// test fails within a few runs.
	conn, err := tls.Dial("tcp", ep.DPS, &tls.Config{RootCAs: dpsRoots(t, ep), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))

	connect := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	connect.ProtocolName, connect.ProtocolVersion, connect.CleanSession, connect.Keepalive = "MQTT", 4, true, 60
	connect.ClientIdentifier = regID
	connect.UsernameFlag, connect.Username = true, ep.IDScope+"/registrations/"+regID+"/api-version=2019-03-31"
	connect.PasswordFlag, connect.Password = true, []byte(dpsSAS(t, ep.IDScope, regID, key))
	rawWrite(t, conn, connect)
	if ack, ok := rawRead(t, conn).(*packets.ConnackPacket); !ok || ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %v", ack)
	}
	sub := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sub.MessageID, sub.Topics, sub.Qoss = 1, []string{dpsResponseFilter}, []byte{1}
	rawWrite(t, conn, sub)
	if _, ok := rawRead(t, conn).(*packets.SubackPacket); !ok {
		t.Fatal("no SUBACK")
	}

	// exchange publishes one request and returns the answer's body, failing
	// if the answer comes before the PUBACK.
	id := uint16(1)
	exchange := func(topic string) []byte {
		id++
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.TopicName, p.Qos, p.MessageID = topic, 1, id
		rawWrite(t, conn, p)
		acked := false
		for {
			switch pkt := rawRead(t, conn).(type) {
			case *packets.PubackPacket:
				acked = acked || pkt.MessageID == id
			case *packets.PublishPacket:
				if !acked {
					t.Fatalf("answer %s arrived before the PUBACK of %s", pkt.TopicName, topic)
				}
				if pkt.Qos == 1 {
					ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
					ack.MessageID = pkt.MessageID
					rawWrite(t, conn, ack)
				}
				return pkt.Payload
			}
		}
	}
	var op string
	for i := range 10 {
		var st wireStatus
		if err := json.Unmarshal(exchange("$dps/registrations/PUT/iotdps-register/?$rid="+strconv.Itoa(i)), &st); err != nil {
			t.Fatal(err)
		}
		op = st.OperationID
	}
	for i := range 10 {
		exchange("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=p" + strconv.Itoa(i) + "&operationId=" + op)
	}
}

func rawWrite(t *testing.T, c net.Conn, p packets.ControlPacket) {
	t.Helper()
	if err := p.Write(c); err != nil {
		t.Fatal(err)
	}
}

func rawRead(t *testing.T, c net.Conn) packets.ControlPacket {
	t.Helper()
	p, err := packets.ReadPacket(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
