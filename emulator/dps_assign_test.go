package emulator

import (
	"crypto/tls"
	"maps"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

func TestDPSAllocation(t *testing.T) {
	groupKey := dpsKey("alloc")
	group := func(id, policy string, hubs ...string) Enrollment {
		g := dpsGroupEnrollment(id, groupKey)
		g.Allocation, g.Hubs = policy, hubs
		return g
	}
	e, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{group("fleet", AllocHashed)}
	})
	register := func(t *testing.T, regID string) wireState {
		t.Helper()
		cl := dpsDial{regID: regID, password: dpsGroupSAS(t, ep.IDScope, regID, groupKey)}.mustConnect(t, ep)
		_, st := cl.provision(nil)
		cl.c.Disconnect(0)
		return *st.RegistrationState
	}

	t.Run("hashed", func(t *testing.T) {
		seen := map[string]bool{}
		for _, id := range []string{"h-1", "h-2", "h-3", "h-4", "h-5", "h-6", "h-7", "h-8"} {
			got := register(t, id).AssignedHub
			if want := dpsAllocate(AllocHashed, e.cfg.Hubs, id, nil).Host; got != want {
				t.Errorf("%s assigned to %s, want %s", id, got, want)
			}
			if again := register(t, id).AssignedHub; again != got {
				t.Errorf("%s moved from %s to %s on re-registering", id, got, again)
			}
			seen[got] = true
		}
		if len(seen) < 2 {
			t.Errorf("eight devices hashed onto %v", seen)
		}
	})
	t.Run("static", func(t *testing.T) {
		e.State().PutEnrollment(group("fleet", AllocStatic, "hub3", "hub1"))
		for _, id := range []string{"s-1", "s-2", "s-3"} {
			if got := register(t, id).AssignedHub; got != "hub3.iotemu.test" {
				t.Errorf("%s assigned to %s, want the first listed hub", id, got)
			}
		}
	})
	t.Run("evenly", func(t *testing.T) {
		e.State().PutEnrollment(group("fleet", AllocEvenly))
		before := e.State().HubLoad()
		for i := range 6 {
			register(t, "e-"+string(rune('a'+i)))
		}
		// Each device goes to the least loaded hub, the first of equals.
		want := maps.Clone(before)
		for range 6 {
			best := "hub1"
			for _, h := range []string{"hub2", "hub3"} {
				if want[h] < want[best] {
					best = h
				}
			}
			want[best]++
		}
		if after := e.State().HubLoad(); !maps.Equal(after, want) {
			t.Errorf("hub loads went from %v to %v, want %v", before, after, want)
		}
	})
}

func TestDPSReprovisioning(t *testing.T) {
	key := dpsKey("repro")
	enroll := func(regID, policy string, hub string) Enrollment {
		enr := dpsSymmetricEnrollment(regID, key)
		enr.Reprovision, enr.Allocation, enr.Hubs = policy, AllocStatic, []string{hub}
		enr.defaults()
		return enr
	}
	e, ep := startDPSEmulator(t, nil)
	e.dps.pollLimit = 1000 // devices re-register several times here
	register := func(t *testing.T, regID string) wireState {
		t.Helper()
		cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
		_, st := cl.provision(nil)
		cl.c.Disconnect(0)
		return *st.RegistrationState
	}
	setReported := func(id string) {
		e.State().WithDevice(id, func(d *Device) { d.Twin.Reported["firmware"] = "1.2" })
	}
	reported := func(id string) any {
		var v any
		e.State().WithDevice(id, func(d *Device) { v = d.Twin.Reported["firmware"] })
		return v
	}
	for _, tc := range []struct {
		policy    string
		substatus string
		hub       string
		twinKept  bool
	}{
		{ReproMigrate, "deviceDataMigrated", "hub2.iotemu.test", true},
		{ReproReset, "deviceDataReset", "hub2.iotemu.test", false},
		{ReproNever, "initialAssignment", "hub1.iotemu.test", true},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			id := "repro-" + tc.policy
			e.State().PutEnrollment(enroll(id, tc.policy, "hub1"))
			if st := register(t, id); st.AssignedHub != "hub1.iotemu.test" || st.Substatus != "initialAssignment" {
				t.Fatalf("first registration: %+v", st)
			}
			setReported(id)
			e.State().PutEnrollment(enroll(id, tc.policy, "hub2"))
			st := register(t, id)
			if st.AssignedHub != tc.hub || st.Substatus != tc.substatus {
				t.Errorf("re-registration: hub %s substatus %s, want %s %s", st.AssignedHub, st.Substatus, tc.hub, tc.substatus)
			}
			if kept := reported(id) == "1.2"; kept != tc.twinKept {
				t.Errorf("twin kept = %v, want %v", kept, tc.twinKept)
			}
			if dev, _ := e.State().Device(id); dpsHubHost(t, e, dev.Hub) != tc.hub {
				t.Errorf("device is on %s", dev.Hub)
			}
		})
	}
	t.Run("back to the first hub", func(t *testing.T) {
		id := "repro-" + ReproMigrate
		e.State().PutEnrollment(enroll(id, ReproMigrate, "hub1"))
		if st := register(t, id); st.Substatus != "reprovisionedToInitialAssignment" || st.AssignedHub != "hub1.iotemu.test" {
			t.Errorf("moving back: %+v", st)
		}
		if st := register(t, id); st.Substatus != "initialAssignment" {
			t.Errorf("registering again on the same hub: %+v", st)
		}
	})
}

func TestDPSReprovisionPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy, allocated string
		had               bool
		current, first    string
		hub, substatus    string
		resetTwin         bool
		description       string
	}{
		{ReproMigrate, "hub1", false, "", "", "hub1", dpsSubstatusInitial, true, "new device"},
		{ReproMigrate, "hub2", true, "hub1", "hub1", "hub2", dpsSubstatusMigrated, false, "migrate to a new hub"},
		{ReproMigrate, "hub1", true, "hub1", "hub1", "hub1", dpsSubstatusInitial, false, "migrate, same hub"},
		{ReproReset, "hub2", true, "hub1", "hub1", "hub2", dpsSubstatusReset, true, "reset to a new hub"},
		{ReproReset, "hub1", true, "hub1", "hub1", "hub1", dpsSubstatusReset, true, "reset, same hub"},
		{ReproNever, "hub2", true, "hub1", "hub1", "hub1", dpsSubstatusInitial, false, "never moves"},
		{ReproMigrate, "hub1", true, "hub2", "hub1", "hub1", dpsSubstatusReturned, false, "back to the first hub"},
		{ReproReset, "hub1", true, "hub2", "hub1", "hub1", dpsSubstatusReturned, true, "back to the first hub, reset"},
	} {
		hub, sub, reset := dpsReprovision(tc.policy, tc.allocated, tc.had, tc.current, tc.first)
		if hub != tc.hub || sub != tc.substatus || reset != tc.resetTwin {
			t.Errorf("%s: got %s %s reset=%v, want %s %s reset=%v", tc.description, hub, sub, reset, tc.hub, tc.substatus, tc.resetTwin)
		}
	}
}

// Re-provisioning to another hub moves the device, and its old hub drops
// the connection it still has.
func TestDPSReprovisionMovesDevice(t *testing.T) {
	const regID = "mover"
	key := dpsKey("mover")
	enr := dpsSymmetricEnrollment(regID, key)
	enr.Allocation, enr.Hubs = AllocStatic, []string{"hub1"}
	e, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{enr} })
	dl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}
	cl := dl.mustConnect(t, ep)
	cl.provision(nil)
	lost := dpsConnectHub(t, ep, "hub1", regID, key)
	enr.Hubs = []string{"hub2"}
	enr.defaults()
	e.State().PutEnrollment(enr)
	_, st := cl.provision(nil)
	if st.RegistrationState.AssignedHub != "hub2.iotemu.test" {
		t.Fatalf("not moved: %+v", st.RegistrationState)
	}
	if dev, _ := e.State().Device(regID); dev.Hub != "hub2" {
		t.Errorf("device on %s", dev.Hub)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("the device is still connected to the hub it was moved from")
	}
}

// dpsConnectHub connects the device to a hub with SAS, as the hub's own
// clients do, and returns a channel that receives when the hub drops it.
func dpsConnectHub(t *testing.T, ep *Endpoints, hubName, deviceID, key string) <-chan error {
	t.Helper()
	hub := ep.Hubs[hubName]
	k, err := sas.DecodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 1)
	o := mqtt.NewClientOptions().AddBroker("ssl://" + hub.Address).SetClientID(deviceID).
		SetUsername(hub.Host + "/" + deviceID + "/?api-version=2021-04-12").
		SetPassword(sas.Sign(sas.HubResource(hub.Host, deviceID), k, "", time.Now().Add(time.Hour))).
		SetCleanSession(true).SetProtocolVersion(4).SetAutoReconnect(false).
		SetTLSConfig(&tls.Config{RootCAs: dpsRoots(t, ep), ServerName: hub.Host, MinVersion: tls.VersionTLS12}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", deviceID, hubName, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return lost
}
