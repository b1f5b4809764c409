package emulator

import (
	"bytes"
	"testing"
	"time"
)

// Each front-end caps what one packet may hold, as the services limit their
// messages: 256 KB of device-to-cloud message on the hub, 96 KB on DPS. A
// message within the limit is served; a larger one closes the connection
// before the server reads it.
func TestPacketLimits(t *testing.T) {
	t.Run("hub", func(t *testing.T) {
		env := newHubEnv(t, nil)
		key := env.addSASDevice(t, "big-sender", "hub1")
		topic := "devices/big-sender/messages/events/"
		c := env.connectSAS(t, "big-sender", key, hubAPIGA)
		c.publish(t, topic, 1, bytes.Repeat([]byte("a"), 256<<10))
		if n := len(env.device(t, "big-sender").Telemetry); n != 1 {
			t.Fatalf("a 256 KB message: %d stored, want it stored", n)
		}
		c.Publish(topic, 1, false, bytes.Repeat([]byte("a"), 257<<10))
		c.waitLost(t, "a message above 256 KB")
	})
	t.Run("DPS", func(t *testing.T) {
		const regID = "big-registrant"
		key := dpsKey("big")
		_, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
		dl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}
		cl := dl.mustConnect(t, ep)
		// Within the limit: a 90 KB custom payload is registered.
		body := append(append([]byte(`{"registrationId":"`+regID+`","payload":{"pad":"`), bytes.Repeat([]byte("a"), 90<<10)...), `"}}`...)
		if r := cl.await(cl.register(body)); r.status != 202 {
			t.Fatalf("a 90 KB register: %d %.200s, want 202", r.status, r.body)
		}
		cl.c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=big", 1, false, bytes.Repeat([]byte("a"), 96<<10))
		select {
		case <-cl.lost:
		case <-time.After(lifecycleWait):
			t.Fatal("DPS kept a connection that sent a packet above 96 KB")
		}
	})
}
