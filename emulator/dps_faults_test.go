package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Every fault action DPS applies, where it applies: at CONNECT, on the
// register and poll answers, and on the issued certificate.
func TestDPSFaults(t *testing.T) {
	const regID = "faulty"
	key := dpsKey("faults")
	e, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	e.dps.pollLimit = 1000 // one device registers over and over here
	dl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}
	inject := func(t *testing.T, f Fault) {
		t.Helper()
		f.Endpoint, f.Device = EndpointDPS, regID
		if _, err := e.Faults().Add(f); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Faults().Clear)
	}

	t.Run("connect refused", func(t *testing.T) {
		for _, action := range []string{ActionDrop, ActionThrottle, ActionError} {
			inject(t, Fault{Operation: OpConnect, Action: action})
			if _, err := dl.connect(t, ep); !errors.Is(err, packets.ErrorRefusedServerUnavailable) {
				t.Errorf("%s at CONNECT: %v, want CONNACK 3", action, err)
			}
		}
		if _, err := dl.connect(t, ep); err != nil {
			t.Errorf("after the faults were used up: %v", err)
		}
	})
	t.Run("connect delayed", func(t *testing.T) {
		inject(t, Fault{Operation: OpConnect, Action: ActionDelay, Delay: Duration(300 * time.Millisecond)})
		start := time.Now()
		if _, err := dl.connect(t, ep); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("CONNACK after %s, want at least the 300ms delay", d)
		}
	})
	t.Run("register dropped", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionDrop})
		cl := dl.mustConnect(t, ep)
		cl.c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, []byte{})
		select {
		case <-cl.lost:
		case <-time.After(5 * time.Second):
			t.Fatal("connection not dropped")
		}
	})
	t.Run("register delayed", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionDelay, Delay: Duration(400 * time.Millisecond)})
		cl := dl.mustConnect(t, ep)
		start := time.Now()
		rid := cl.register(nil)
		// Other requests are not held up behind the delayed one.
		if r := cl.await(cl.poll("none")); r.status != 404 {
			t.Errorf("poll during the delay: %d", r.status)
		}
		if r := cl.await(rid); r.status != 202 || time.Since(start) < 400*time.Millisecond {
			t.Errorf("delayed register: %d after %s", r.status, time.Since(start))
		}
	})
	t.Run("register throttled", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionThrottle})
		cl := dl.mustConnect(t, ep)
		r := cl.await(cl.register(nil))
		if eb := r.errorBody(t); r.status != 429 || r.retryAfter != 5 || eb.ErrorCode != dpsCodeThrottled {
			t.Errorf("throttle: %d retry-after=%d %s", r.status, r.retryAfter, r.body)
		}
	})
	t.Run("poll error", func(t *testing.T) {
		inject(t, Fault{Operation: OpPoll, Action: ActionError, Status: 503, RetryAfter: 7})
		cl := dl.mustConnect(t, ep)
		op := cl.await(cl.register(nil)).status200(t).OperationID
		r := cl.await(cl.poll(op))
		if eb := r.errorBody(t); r.status != 503 || r.retryAfter != 7 || eb.ErrorCode != 503001 {
			t.Errorf("error fault: %d retry-after=%d %s", r.status, r.retryAfter, r.body)
		}
	})
	t.Run("malformed JSON", func(t *testing.T) {
		inject(t, Fault{Operation: OpPoll, Action: ActionMalformedJSON})
		cl := dl.mustConnect(t, ep)
		op := cl.await(cl.register(nil)).status200(t).OperationID
		time.Sleep(50 * time.Millisecond)
		r := cl.await(cl.poll(op))
		if r.status != 200 || json.Valid(r.body) || len(r.body) == 0 {
			t.Errorf("malformed_json: %d %q", r.status, r.body)
		}
		if r := cl.await(cl.poll(op)); r.status != 200 || !json.Valid(r.body) {
			t.Errorf("the next poll: %d %s", r.status, r.body)
		}
	})
	t.Run("hostile", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionHostile})
		cl := dl.mustConnect(t, ep)
		r := cl.await(cl.register(nil))
		if r.status != 202 || len(r.body) > dpsMaxPacket-512 || len(r.body) < dpsMaxPacket-2048 {
			t.Errorf("hostile: %d, %d bytes, want just under %d", r.status, len(r.body), dpsMaxPacket)
		}
		if depth := bytes.Count(r.body, []byte("[")); depth <= 10000 {
			t.Errorf("hostile answer nests %d deep", depth)
		}
		if !bytes.HasPrefix(r.body, []byte(`{"operationId":"4.`)) {
			t.Errorf("hostile answer does not start like the real one: %.60s", r.body)
		}
	})

	issued := func(t *testing.T) (*wireState, []byte) {
		t.Helper()
		cl := dl.mustConnect(t, ep)
		csrKey, csr := dpsCSR(t, regID)
		_, st := cl.provision(registerBody(regID, csr, ""))
		return st.RegistrationState, dpsPublicDER(t, csrKey.Public())
	}
	leafOf := func(t *testing.T, st *wireState) *x509.Certificate {
		t.Helper()
		return dpsChain(t, st)[0]
	}
	t.Run("wrong key", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionWrongKey})
		st, pub := issued(t)
		leaf := leafOf(t, st)
		if bytes.Equal(dpsPublicDER(t, leaf.PublicKey), pub) {
			t.Error("wrong_key: the leaf holds the device's key")
		}
		if leaf.Subject.CommonName != regID {
			t.Errorf("wrong_key changed the CN too: %q", leaf.Subject.CommonName)
		}
	})
	t.Run("expired", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionExpired})
		st, _ := issued(t)
		if leaf := leafOf(t, st); !leaf.NotAfter.Before(time.Now()) {
			t.Errorf("expired: leaf valid until %s", leaf.NotAfter)
		}
	})
	t.Run("wrong CN", func(t *testing.T) {
		inject(t, Fault{Operation: OpRegister, Action: ActionWrongCN})
		st, _ := issued(t)
		if cn := leafOf(t, st).Subject.CommonName; cn == regID {
			t.Errorf("wrong_cn: CN is %q", cn)
		}
	})
	t.Run("wrong key on one poll", func(t *testing.T) {
		inject(t, Fault{Operation: OpPoll, Action: ActionWrongKey})
		cl := dl.mustConnect(t, ep)
		csrKey, csr := dpsCSR(t, regID)
		pub := dpsPublicDER(t, csrKey.Public())
		final, st := cl.provision(registerBody(regID, csr, ""))
		if bytes.Equal(dpsPublicDER(t, leafOf(t, st.RegistrationState).PublicKey), pub) {
			t.Errorf("the poll with the fault got the right key: %.80s", final.body)
		}
		r := cl.await(cl.poll(st.OperationID))
		if !bytes.Equal(dpsPublicDER(t, leafOf(t, r.status200(t).RegistrationState).PublicKey), pub) {
			t.Error("the next poll still has the wrong key")
		}
	})
	t.Run("issuance fault waits for a CSR", func(t *testing.T) {
		inject(t, Fault{Action: ActionExpired}) // any operation
		cl := dl.mustConnect(t, ep)
		cl.provision(nil) // no CSR: nothing to spoil
		st, _ := issued(t)
		if leaf := leafOf(t, st); !leaf.NotAfter.Before(time.Now()) {
			t.Error("the fault was used up before a certificate was issued")
		}
	})
}
