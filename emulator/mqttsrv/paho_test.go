package mqttsrv

import (
	"errors"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// pahoClient connects the paho client to env over TLS, presenting the test client certificate.
func pahoClient(t *testing.T, env *testEnv, clientID string, configure func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	t.Helper()
	opts := mqtt.NewClientOptions().
		AddBroker("ssl://" + env.addr).
		SetClientID(clientID).
		SetUsername("scope/registrations/" + clientID).
		SetPassword("secret").
		SetTLSConfig(env.pki.clientConfig(true)).
		SetProtocolVersion(4). // no silent fallback to 3.1 after a refusal
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetWriteTimeout(waitFor)
	if configure != nil {
		configure(opts)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		t.Fatal("paho Connect did not finish")
	}
	return c, tok.Error()
}

func wait(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("%s: no answer within %s", what, waitFor)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestPahoClientEndToEnd(t *testing.T) {
	env := startServer(t, newTestPKI(t), Options{})
	lost := make(chan error, 1)
	client, err := pahoClient(t, env, "device-1", func(o *mqtt.ClientOptions) {
		o.SetKeepAlive(2 * time.Second).SetPingTimeout(time.Second)
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	if err != nil {
		t.Fatal(err)
	}
	s := recv(t, env.handler.sessions, "session")

	t.Run("CONNECT fields and TLS reach the handler", func(t *testing.T) {
		r := s.req
		if r.ClientID != "device-1" || r.Username != "scope/registrations/device-1" || !r.HasPassword || string(r.Password) != "secret" {
			t.Fatalf("client %q, username %q, password %q", r.ClientID, r.Username, r.Password)
		}
		if certs := r.PeerCertificates(); len(certs) != 1 || certs[0].Subject.CommonName != "device-1" {
			t.Fatalf("peer certificates %v, want the client's device-1 certificate", certs)
		}
		if r.TLS.ServerName != "localhost" || !r.CleanSession || r.KeepAlive != 2*time.Second {
			t.Fatalf("SNI %q, clean session %t, keep-alive %s", r.TLS.ServerName, r.CleanSession, r.KeepAlive)
		}
	})

	replies := make(chan mqtt.Message, 8)
	wait(t, client.Subscribe("reply/#", 1, func(_ mqtt.Client, m mqtt.Message) { replies <- m }), "subscribe")
	if got := recv(t, s.subscribed, "subscribe"); got[0] != (Subscription{Filter: "reply/#", QoS: 1}) {
		t.Fatalf("session got %+v", got)
	}

	for _, qos := range []byte{0, 1} {
		payload := []byte{'q', '0' + qos}
		wait(t, client.Publish("echo/x", qos, false, payload), "publish") // QoS 1: completes on our PUBACK
		if m := recv(t, s.published, "message"); m.QoS != qos || string(m.Payload) != string(payload) {
			t.Fatalf("session got %+v, want QoS %d %q", m, qos, payload)
		}
		if m := recv(t, replies, "reply"); m.Topic() != "reply/x" || m.Qos() != qos || string(m.Payload()) != string(payload) {
			t.Fatalf("client got %s QoS %d %q, want reply/x QoS %d %q", m.Topic(), m.Qos(), m.Payload(), qos, payload)
		}
	}

	t.Run("server publishes from another goroutine and paho acknowledges", func(t *testing.T) {
		d, err := env.handler.registry.Lookup("device-1").Publish("reply/direct", []byte("method"), 1)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, d.Done(), "PUBACK")
		if d.Err() != nil {
			t.Fatal(d.Err())
		}
		if m := recv(t, replies, "direct message"); m.Topic() != "reply/direct" {
			t.Fatalf("client got %s", m.Topic())
		}
	})

	t.Run("pings keep an idle connection open", func(t *testing.T) {
		// paho pings 2 to 2.5 s after it last sent anything and gives up after a second without PINGRESP;
		// the server cuts the connection after 3 s of silence. Both must hold for two rounds.
		time.Sleep(5 * time.Second)
		if !client.IsConnectionOpen() || len(lost) != 0 || len(s.closed) != 0 {
			t.Fatalf("connection lost while idle: %v", <-lost)
		}
	})

	wait(t, client.Unsubscribe("reply/#"), "unsubscribe")
	if got := recv(t, s.unsubscribed, "unsubscribe"); len(got) != 1 || got[0] != "reply/#" {
		t.Fatalf("session got unsubscribe %q", got)
	}

	client.Disconnect(1000)
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, ErrClientDisconnected) {
		t.Fatalf("Session.Closed(%v), want ErrClientDisconnected", reason)
	}
}

func TestPahoSeesEveryRefusal(t *testing.T) {
	h := newTestHandler()
	env := startServer(t, newTestPKI(t), Options{Handler: h})
	for _, code := range []ConnackCode{
		RefusedProtocolVersion, RefusedIdentifierRejected, RefusedServerUnavailable,
		RefusedBadUsernameOrPassword, RefusedNotAuthorized,
	} {
		t.Run(code.String(), func(t *testing.T) {
			h.code = code
			client, err := pahoClient(t, env, "refused", nil)
			if !errors.Is(err, packets.ConnErrors[byte(code)]) {
				t.Fatalf("paho got %v, want %v", err, packets.ConnErrors[byte(code)])
			}
			if client.IsConnected() {
				t.Fatal("paho reports a refused connection as connected")
			}
		})
	}
}
