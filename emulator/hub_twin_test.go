package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// twinDoc is the GET answer's shape.
type twinDoc struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

func (c *hubClient) getTwin(t *testing.T, rid string) twinDoc {
	t.Helper()
	var doc twinDoc
	if err := json.Unmarshal(c.getTwinRaw(t, rid), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func (c *hubClient) getTwinRaw(t *testing.T, rid string) []byte {
	t.Helper()
	c.publish(t, "$iothub/twin/GET/?$rid="+rid, 0, []byte(" ")) // the Node.js SDK's body
	return c.expect(t, "$iothub/twin/res/200/?$rid="+rid).Payload()
}

func TestHubTwin(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "twin-1", "hub1")
	c := env.connectSAS(t, "twin-1", key, hubAPIGA)
	c.mustSubscribe(t, hubFilterTwinResponses)

	doc := c.getTwin(t, "1")
	if hubJSON(t, doc) != `{"desired":{"$version":1},"reported":{"$version":1}}` {
		t.Fatalf("a new device's twin: %s", hubJSON(t, doc))
	}

	c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=2", 0, []byte(`{"fw":"1.2.3","cert":{"validUntil":"2026-01-01T00:00:00Z"},"big":12345678901234567890}`))
	if m := c.expect(t, "$iothub/twin/res/204/?$rid=2&$version=2"); len(m.Payload()) != 0 {
		t.Errorf("204 with body %q", m.Payload())
	}
	c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=3", 1, []byte(`{"fw":null,"cert":{"validFrom":"2025-12-01T00:00:00Z"}}`))
	c.expect(t, "$iothub/twin/res/204/?$rid=3&$version=3")

	raw := c.getTwinRaw(t, "4")
	want := `{"desired":{"$version":1},"reported":{"$version":3,"big":12345678901234567890,"cert":{"validFrom":"2025-12-01T00:00:00Z","validUntil":"2026-01-01T00:00:00Z"}}}`
	if string(raw) != want {
		t.Errorf("twin after two patches (big integers exact, null deleting):\n got %s\nwant %s", raw, want)
	}

	t.Run("bad patches are refused with 400 and change nothing", func(t *testing.T) {
		for i, tt := range []struct {
			body string
			code int
		}{
			{`{"fw":`, 400006},
			{`not json`, 400006},
			{``, 400006},
			{`["a","b"]`, 400004},
			{`42`, 400004},
		} {
			rid := "bad" + string(rune('a'+i))
			c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid="+rid, 0, []byte(tt.body))
			if b := hubErrorOf(t, c.expect(t, "$iothub/twin/res/400/?$rid="+rid)); b.ErrorCode != tt.code {
				t.Errorf("patch %q: errorCode %d, want %d", tt.body, b.ErrorCode, tt.code)
			}
		}
		if v := env.device(t, "twin-1").Twin.ReportedVersion; v != 3 {
			t.Errorf("reported $version %d after refused patches, want 3", v)
		}
	})

	t.Run("requests without $rid get no answer", func(t *testing.T) {
		c.publish(t, "$iothub/twin/GET/", 0, nil)
		c.publish(t, "$iothub/twin/PATCH/properties/reported/", 0, []byte(`{"norid":true}`))
		c.getTwin(t, "after") // the next answer is this one's: nothing came before it
		if v := env.device(t, "twin-1").Twin.ReportedVersion; v != 4 {
			t.Errorf("a patch without $rid still applies: $version %d, want 4", v)
		}
	})
}

func TestHubDesiredPush(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "desired-1", "hub1")
	h := env.hub1()
	update := func(patch map[string]any) int {
		var v int
		env.e.State().WithDevice("desired-1", func(d *Device) {
			MergePatch(d.Twin.Desired, patch)
			d.Twin.DesiredVersion++
			v = d.Twin.DesiredVersion
		})
		h.PushDesired("desired-1", patch, v)
		return v
	}
	update(map[string]any{"offline": true}) // not connected: nothing to push to

	c := env.connectSAS(t, "desired-1", key, hubAPIGA)
	c.mustSubscribe(t, hubFilterTwinResponses)
	update(map[string]any{"unsubscribed": true}) // connected, not subscribed
	c.getTwin(t, "barrier")                      // nothing arrived before this answer

	c.mustSubscribe(t, hubFilterDesired)
	v := update(map[string]any{"interval": 30, "nested": map[string]any{"a": 1}})
	m := c.expect(t, "$iothub/twin/PATCH/properties/desired/?$version=4")
	if got, want := string(m.Payload()), `{"$version":4,"interval":30,"nested":{"a":1}}`; got != want || v != 4 {
		t.Errorf("desired patch %s (version %d), want %s", got, v, want)
	}
	doc := c.getTwin(t, "after")
	if doc.Desired["offline"] != true || doc.Desired["$version"] != float64(4) {
		t.Errorf("desired properties after the pushes: %v", doc.Desired)
	}
}

func TestHubDirectMethods(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "methods-1", "hub1")
	h := env.hub1()
	ctx := context.Background()

	if _, _, err := h.InvokeMethod(ctx, "methods-1", "reboot", nil, time.Second); !errors.Is(err, ErrDeviceNotConnected) {
		t.Fatalf("method on a disconnected device: %v, want ErrDeviceNotConnected", err)
	}
	c := env.connectSAS(t, "methods-1", key, hubAPIGA)
	if _, _, err := h.InvokeMethod(ctx, "methods-1", "reboot", nil, time.Second); !errors.Is(err, ErrDeviceNotConnected) {
		t.Fatalf("method on a device not subscribed to methods: %v, want ErrDeviceNotConnected", err)
	}
	c.mustSubscribe(t, hubFilterMethods)

	// The device answers each call with the status and body it is told.
	answers := map[string]struct {
		status int
		body   string
	}{
		"reboot":  {200, `{"rebooting":true}`},
		"fail":    {500, `{"error":"no"}`},
		"empty":   {204, ``},
		"notjson": {200, `plain text`},
	}
	var mu sync.Mutex
	received := map[string][]string{} // method name -> payloads
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			var m mqtt.Message
			select {
			case m = <-c.msgs:
			case <-stop:
				return
			}
			path, query := hubSplitTopicQuery(m.Topic())
			q, _ := parseHubQuery(query)
			rid, _, _ := q.get("$rid")
			name := path[len("$iothub/methods/POST/"):]
			mu.Lock()
			received[name] = append(received[name], string(m.Payload()))
			mu.Unlock()
			if a, ok := answers[name]; ok {
				c.Publish("$iothub/methods/res/"+strconv.Itoa(a.status)+"/?$rid="+rid, 0, false, []byte(a.body))
			} // "slow" is never answered
		}
	}()
	for name, a := range answers {
		status, payload, err := h.InvokeMethod(ctx, "methods-1", name, json.RawMessage(`{"delay":1}`), hubWait)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wantBody := a.body
		if name == "notjson" {
			wantBody = `"plain text"`
		}
		if status != a.status || string(payload) != wantBody {
			t.Errorf("%s answered %d %s, want %d %s", name, status, payload, a.status, wantBody)
		}
	}
	if _, _, err := h.InvokeMethod(ctx, "methods-1", "slow", nil, 300*time.Millisecond); !errors.Is(err, ErrMethodTimeout) {
		t.Errorf("unanswered method: %v, want ErrMethodTimeout", err)
	}
	for _, bad := range []string{"", "a/b", "a+b", "a#", "with space", "q?"} {
		if _, _, err := h.InvokeMethod(ctx, "methods-1", bad, nil, time.Second); !errors.Is(err, ErrInvalidMethodName) {
			t.Errorf("method name %q: %v, want ErrInvalidMethodName", bad, err)
		}
	}
	mu.Lock()
	want := map[string][]string{"slow": {"null"}}
	for name := range answers {
		want[name] = []string{`{"delay":1}`}
	}
	if hubJSON(t, received) != hubJSON(t, want) {
		t.Errorf("the device received %v, want %v", received, want)
	}
	mu.Unlock()

	t.Run("the device disconnects before answering", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			_, _, err := h.InvokeMethod(ctx, "methods-1", "slow", nil, hubWait)
			done <- err
		}()
		// Wait until the call is on the wire, then drop the device.
		deadline := time.Now().Add(hubWait)
		for {
			h.mu.Lock()
			n := len(h.methods)
			h.mu.Unlock()
			if n > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		h.Disconnect("methods-1", nil)
		select {
		case err := <-done:
			if !errors.Is(err, ErrDeviceNotConnected) {
				t.Errorf("call to a device that disconnected: %v, want ErrDeviceNotConnected", err)
			}
		case <-time.After(hubWait):
			t.Fatal("InvokeMethod did not return after the device disconnected")
		}
	})
}
