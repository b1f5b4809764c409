package emulator

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// c2dPost sends a message through the admin API and decodes the answer: the
// delivery on 200, the queue entry on 202.
func (env *hubEnv) c2dPost(t *testing.T, id, body string) (int, C2DDelivery, C2DQueued) {
	t.Helper()
	status, answer := call(t, env.ep, "POST", "/api/devices/"+id+"/c2d", body)
	var (
		d C2DDelivery
		q C2DQueued
	)
	switch status {
	case 200:
		if err := json.Unmarshal([]byte(answer), &d); err != nil {
			t.Fatalf("200 answer %s: %v", answer, err)
		}
	case 202:
		if err := json.Unmarshal([]byte(answer), &q); err != nil {
			t.Fatalf("202 answer %s: %v", answer, err)
		}
	}
	return status, d, q
}

// c2dQueue lists the device's queue through the admin API.
func (env *hubEnv) c2dQueue(t *testing.T, id string) []C2DQueued {
	t.Helper()
	status, body := call(t, env.ep, "GET", "/api/devices/"+id+"/c2d", "")
	var q []C2DQueued
	if err := json.Unmarshal([]byte(body), &q); status != 200 || err != nil || q == nil {
		t.Fatalf("GET c2d: %d %s (%v), want a JSON list", status, body, err)
	}
	return q
}

// waitC2DQueue waits until the device's queue holds n messages: a PUBACK
// reaches the hub a moment after the client has the message.
func (env *hubEnv) waitC2DQueue(t *testing.T, id string, n int) []C2DQueued {
	t.Helper()
	deadline := time.Now().Add(hubWait)
	for {
		q := env.c2dQueue(t, id)
		if len(q) == n {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue of %s holds %d messages, want %d: %+v", id, len(q), n, q)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// c2dBag decodes a received message's property bag.
func c2dBag(t *testing.T, id, topic string) url.Values {
	t.Helper()
	bag, ok := strings.CutPrefix(topic, "devices/"+id+"/messages/devicebound/")
	if !ok {
		t.Fatalf("topic %s is not %s's C2D topic", topic, id)
	}
	v, err := url.ParseQuery(bag)
	if err != nil {
		t.Fatalf("bag %q: %v", bag, err)
	}
	return v
}

func TestC2DExpiryRules(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, tt := range []struct {
		exp  string // "" for none
		want time.Time
		err  string
	}{
		{exp: "", want: now.Add(time.Hour).UTC()},
		{exp: "2026-03-01T11:05:00Z", want: time.Date(2026, 3, 1, 11, 5, 0, 0, time.UTC)},
		{exp: "2026-03-01T11:05:00.123Z", want: time.Date(2026, 3, 1, 11, 5, 0, 123e6, time.UTC)}, // Node's toISOString
		{exp: "2026-03-03T12:00:00+01:00", want: now.Add(48 * time.Hour).UTC()},
		{exp: "2026-03-03T12:00:01+01:00", err: "more than 48h0m0s away"},
		{exp: "2026-03-01T12:00:00+01:00", err: "has passed"},
		{exp: "2026-03-01 13:00", err: "not an RFC 3339 time"},
	} {
		m := C2DMessage{Properties: map[string]string{}}
		if tt.exp != "" {
			m.Properties[c2dExpiryProperty] = tt.exp
		}
		got, err := c2dExpiry(m, now)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("$.exp %q: %v, %v; want an error saying %q", tt.exp, got, err, tt.err)
		case tt.err == "" && (err != nil || !got.Equal(tt.want) || got.Location() != time.UTC):
			t.Errorf("$.exp %q: %v, %v; want %v in UTC", tt.exp, got, err, tt.want)
		}
	}
}

// A message sent while the device is offline waits in its queue, as the
// admin API shows, and reaches the device with its body and properties once
// it subscribes; one sent while a CleanSession 0 device is away reaches it
// right after the CONNACK, through the subscription its session kept.
func TestC2DQueuedWhileOffline(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "sleeper", "hub1")
	const filter = "devices/sleeper/messages/devicebound/#"

	before := time.Now().UTC()
	status, _, q := env.c2dPost(t, "sleeper",
		`{"body":"{\"cmd\":\"update\"}","message_id":"while-away","properties":{"$.ct":"application/json","$.cid":"corr-1","reason":"a b"}}`)
	if status != 202 || q.Status != C2DStatusQueued || q.Position != 1 || q.Deliveries != 0 || !strings.Contains(q.Reason, "not connected") {
		t.Fatalf("POST while offline: %d %+v, want 202 queued at position 1", status, q)
	}
	if ttl := q.ExpiresAt.Sub(q.EnqueuedAt); ttl != time.Hour || q.EnqueuedAt.Before(before.Add(-time.Second)) {
		t.Errorf("enqueued %v, expires %v: want IoT Hub's default TTL of one hour", q.EnqueuedAt, q.ExpiresAt)
	}
	if list := env.c2dQueue(t, "sleeper"); len(list) != 1 || list[0].MessageID != "while-away" || list[0].Body != `{"cmd":"update"}` ||
		list[0].Properties["reason"] != "a b" || list[0].Status != C2DStatusQueued {
		t.Errorf("GET c2d: %+v", list)
	}

	d := hubDial{clientID: "sleeper", username: hubUser(hub1Host, "sleeper", hubAPIGA)}
	connect := func() *hubClient {
		d.password = hubSASToken(hub1Host, "sleeper", key, time.Now().Add(time.Hour))
		return env.mustConnect(t, d)
	}
	c := connect()
	c.mustSubscribe(t, filter)
	m := c.next(t)
	bag := c2dBag(t, "sleeper", m.Topic())
	if string(m.Payload()) != `{"cmd":"update"}` || m.Qos() != 1 || bag.Get("$.mid") != "while-away" ||
		bag.Get("$.to") != "/devices/sleeper/messages/deviceBound" || bag.Get("$.ct") != "application/json" ||
		bag.Get("$.cid") != "corr-1" || bag.Get("reason") != "a b" {
		t.Errorf("after subscribing, the device received %s %s at QoS %d", m.Topic(), m.Payload(), m.Qos())
	}
	env.waitC2DQueue(t, "sleeper", 0) // the PUBACK completed it
	c.Disconnect(250)
	env.waitState(t, "sleeper", "disconnected", func(d Device) bool { return !d.Connected })

	if status, _, q := env.c2dPost(t, "sleeper", `{"body":"kept","message_id":"while-gone"}`); status != 202 || q.Position != 1 {
		t.Fatalf("POST while the device is away: %d %+v", status, q)
	}
	c = connect()
	if !c.present {
		t.Fatal("CleanSession 0 reconnection without a kept session")
	}
	if m := c.next(t); string(m.Payload()) != "kept" || c2dBag(t, "sleeper", m.Topic()).Get("$.mid") != "while-gone" {
		t.Errorf("right after reconnecting, received %s %s", m.Topic(), m.Payload())
	}
	env.waitC2DQueue(t, "sleeper", 0)
	status, got, _ := env.c2dPost(t, "sleeper", `{"body":"live"}`)
	if status != 200 || got.Status != C2DStatusDelivered {
		t.Fatalf("POST to the connected device: %d %+v", status, got)
	}
	if m := c.expect(t, got.Topic); string(m.Payload()) != "live" {
		t.Errorf("live message body %q", m.Payload())
	}
}

// A message the device received but did not acknowledge goes back to the
// queue when its connection ends, and the device gets it again, same ID and
// body, on its next subscribed connection.
func TestC2DUnacknowledgedIsDeliveredAgain(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "fumbler", "hub1")
	const filter = "devices/fumbler/messages/devicebound/#"
	d := hubDial{clientID: "fumbler", username: hubUser(hub1Host, "fumbler", hubAPIGA), clean: true, noAck: true}
	d.password = hubSASToken(hub1Host, "fumbler", key, time.Now().Add(time.Hour))
	c := env.mustConnect(t, d)
	c.mustSubscribe(t, filter)

	type answer struct {
		status int
		q      C2DQueued
	}
	answered := make(chan answer, 1)
	go func() {
		status, _, q := env.c2dPost(t, "fumbler", `{"body":"do it","message_id":"once-more","properties":{"k":"v"}}`)
		answered <- answer{status, q}
	}()
	first := c.next(t) // received, never acknowledged
	if list := env.c2dQueue(t, "fumbler"); len(list) != 1 || list[0].Status != C2DStatusSent || list[0].Deliveries != 1 {
		t.Errorf("while the PUBACK is outstanding, GET c2d shows %+v; want it sent once", list)
	}
	c.Disconnect(0)
	select {
	case a := <-answered:
		if a.status != 202 || a.q.Status != C2DStatusQueued || a.q.Deliveries != 1 || !strings.Contains(a.q.Reason, "before acknowledging") {
			t.Errorf("POST answered %d %+v; want 202, back in the queue after one delivery", a.status, a.q)
		}
	case <-time.After(hubWait):
		t.Fatal("POST did not answer once the device disconnected")
	}
	if list := env.waitC2DQueue(t, "fumbler", 1); list[0].Status != C2DStatusQueued {
		t.Errorf("after the disconnection, GET c2d shows %+v; want it queued again", list)
	}

	d.noAck = false
	d.password = hubSASToken(hub1Host, "fumbler", key, time.Now().Add(time.Hour))
	c = env.mustConnect(t, d)
	c.mustSubscribe(t, filter)
	again := c.next(t)
	if again.Topic() != first.Topic() || string(again.Payload()) != "do it" {
		t.Errorf("redelivered %s %s, first delivered %s", again.Topic(), again.Payload(), first.Topic())
	}
	env.waitC2DQueue(t, "fumbler", 0)
}

// A device's queue holds 50 messages; the 51st is refused with 403004 naming
// the limit, the queue empties in order once the device subscribes, and a
// purge empties it at once.
func TestC2DQueueLimit(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "popular", "hub1")
	for i := 1; i <= c2dMaxQueued; i++ {
		status, _, q := env.c2dPost(t, "popular", fmt.Sprintf(`{"body":"n%d","message_id":"m-%d"}`, i, i))
		if status != 202 || q.Position != i {
			t.Fatalf("message %d: %d %+v, want 202 at position %d", i, status, q, i)
		}
	}
	status, body := call(t, env.ep, "POST", "/api/devices/popular/c2d", `{"body":"one too many"}`)
	if status != 403 || !strings.Contains(body, "403004 DeviceMaximumQueueDepthExceeded") || !strings.Contains(body, "50 cloud-to-device messages") {
		t.Errorf("the 51st message: %d %s, want 403 with 403004 and the limit of 50", status, body)
	}

	c := env.connectSAS(t, "popular", key, hubAPIGA)
	c.mustSubscribe(t, "devices/popular/messages/devicebound/#")
	for i := 1; i <= c2dMaxQueued; i++ {
		if m := c.next(t); string(m.Payload()) != fmt.Sprintf("n%d", i) {
			t.Fatalf("message %d of the queue is %s %s: want the queue's order", i, m.Topic(), m.Payload())
		}
	}
	env.waitC2DQueue(t, "popular", 0)
	if status, _, _ := env.c2dPost(t, "popular", `{"body":"room again"}`); status != 200 {
		t.Errorf("after the queue emptied: %d, want 200", status)
	}

	c.Disconnect(250)
	env.waitState(t, "popular", "disconnected", func(d Device) bool { return !d.Connected })
	for range 3 {
		env.c2dPost(t, "popular", `{"body":"stale"}`)
	}
	status, body = call(t, env.ep, "DELETE", "/api/devices/popular/c2d", "")
	if status != 200 || compact(t, body) != `{"device_id":"popular","purged":3}` {
		t.Errorf("DELETE c2d: %d %s", status, body)
	}
	env.waitC2DQueue(t, "popular", 0)
	if status, _ := call(t, env.ep, "GET", "/api/devices/nobody/c2d", ""); status != 404 {
		t.Errorf("GET c2d of an unknown device: %d", status)
	}
}

// fakeClock is a clock the test moves forward.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// A message past its expiry, its own ($.exp) or the default hour, leaves the
// queue undelivered; the device gets only what is still current.
func TestC2DExpiredMessagesAreNotDelivered(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	env := newHubEnvClock(t, nil, clock.now)
	key := env.addSASDevice(t, "late", "hub1")
	exp := clock.now().Add(2 * time.Minute).UTC().Format(time.RFC3339)
	if status, _, q := env.c2dPost(t, "late", `{"body":"short","properties":{"$.exp":"`+exp+`"}}`); status != 202 || q.ExpiresAt.Format(time.RFC3339) != exp {
		t.Fatalf("POST with $.exp: %d %+v", status, q)
	}
	env.c2dPost(t, "late", `{"body":"default","message_id":"hour"}`)
	for _, bad := range []string{
		clock.now().Add(-time.Minute).UTC().Format(time.RFC3339),
		clock.now().Add(49 * time.Hour).UTC().Format(time.RFC3339),
	} {
		if status, body := call(t, env.ep, "POST", "/api/devices/late/c2d", `{"body":"x","properties":{"$.exp":"`+bad+`"}}`); status != 400 {
			t.Errorf("$.exp %s: %d %s, want 400", bad, status, body)
		}
	}

	clock.advance(3 * time.Minute)
	if list := env.c2dQueue(t, "late"); len(list) != 1 || list[0].MessageID != "hour" {
		t.Errorf("after 3 minutes the queue holds %+v, want only the message with the default TTL", list)
	}
	clock.advance(time.Hour)
	env.c2dPost(t, "late", `{"body":"fresh"}`)

	c := env.mustConnect(t, hubDial{
		clientID: "late", username: hubUser(hub1Host, "late", hubAPIGA), clean: true,
		password: hubSASToken(hub1Host, "late", key, clock.now().Add(time.Hour)),
	})
	c.mustSubscribe(t, "devices/late/messages/devicebound/#")
	if m := c.next(t); string(m.Payload()) != "fresh" {
		t.Errorf("the device received %s first; the expired messages must not be delivered", m.Payload())
	}
	env.waitC2DQueue(t, "late", 0)
}
