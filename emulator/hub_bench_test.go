package emulator

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"go.uber.org/zap"
)

// BenchmarkHubTelemetry measures device-to-cloud messages per second over
// one connection: QoS 1 PUBLISHes with a property bag, pipelined, each
// acknowledged only once the hub has stored it. The client speaks raw MQTT
// (the paho codec) over TLS so the figure is the hub's, not a client
// library's.
func BenchmarkHubTelemetry(b *testing.B) {
	cfg := Config{
		DPS:   ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  []HubConfig{{Name: "hub1", Host: hub1Host, Listen: "127.0.0.1:0"}},
		Admin: ListenerConfig{Listen: "127.0.0.1:0"},
	}
	e, err := New(cfg, b.TempDir(), Options{Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	key := []byte("benchmark-device-key-32-bytes!!!")
	e.State().AssignDevice(Device{DeviceID: "bench", RegistrationID: "bench", Hub: "hub1", SymmetricKeys: [][]byte{key}}, true)

	pem, err := os.ReadFile(ep.TLSCAFile)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", ep.Hubs["hub1"].Address, &tls.Config{RootCAs: roots, ServerName: hub1Host})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)

	connect := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	connect.ProtocolName, connect.ProtocolVersion, connect.CleanSession, connect.Keepalive = "MQTT", 4, true, 60
	connect.ClientIdentifier = "bench"
	connect.UsernameFlag, connect.Username = true, hubUser(hub1Host, "bench", hubAPIGA)
	connect.PasswordFlag, connect.Password = true, []byte(hubSASToken(hub1Host, "bench", key, time.Now().Add(time.Hour)))
	if err := connect.Write(conn); err != nil {
		b.Fatal(err)
	}
	ack, err := packets.ReadPacket(r)
	if err != nil {
		b.Fatal(err)
	}
	if ca, ok := ack.(*packets.ConnackPacket); !ok || ca.ReturnCode != 0 {
		b.Fatalf("CONNECT answered with %v", ack)
	}

	payload := []byte(`{"temperature":21.5,"humidity":48,"pressure":1013.2,"seq":` + strings.Repeat("0", 190) + `}`)
	topic := "devices/bench/messages/events/$.ct=application%2Fjson&$.ce=utf-8&source=bench"
	writeErr := make(chan error, 1)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	go func() {
		w := bufio.NewWriter(conn)
		for i := range b.N {
			p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			p.TopicName, p.Qos, p.MessageID, p.Payload = topic, 1, uint16(i%0xffff+1), payload
			if err := p.Write(w); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- w.Flush()
	}()
	for range b.N {
		p, err := packets.ReadPacket(r)
		if err != nil {
			b.Fatalf("read PUBACK: %v", err)
		}
		if _, ok := p.(*packets.PubackPacket); !ok {
			b.Fatalf("got %v, want PUBACK", p)
		}
	}
	b.StopTimer()
	if err := <-writeErr; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")

	var n int
	var props map[string]string
	e.State().WithDevice("bench", func(d *Device) { n, props = len(d.Telemetry), d.Telemetry[len(d.Telemetry)-1].Properties })
	if want := min(b.N, maxTelemetryKept); n != want || props["source"] != "bench" {
		b.Fatalf("stored %d messages (last with %v), want %d", n, props, want)
	}
}
