package emulator

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hubGoroutines counts goroutines running the hub's code.
func hubGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n, found := 0, ""
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "emulator.(*hub") {
			n++
			found += g + "\n\n"
		}
	}
	return n, found
}

// Closing the emulator ends every goroutine the hub started: SAS expiry
// timers, delayed answers, pending credential operations and waiting
// method calls.
func TestHubCloseEndsBackgroundWork(t *testing.T) {
	env := newHubEnv(t, func(c *Config) { c.Certificates.CredentialAPIDelay = Duration(time.Hour) })
	key := env.addSASDevice(t, "busy", "hub1")
	c := env.connectSAS(t, "busy", key, hubAPIGA) // its token expiry is watched
	c.mustSubscribe(t, hubFilterTwinResponses, hubFilterMethods)
	env.addFault(t, Fault{Endpoint: EndpointHub, Device: "busy", Operation: OpTwin, Action: ActionDelay, Delay: Duration(time.Hour)})
	c.publish(t, "$iothub/twin/GET/?$rid=never", 0, nil)

	dev := env.addIssuedDevice(t, "busy-x509")
	x := env.connectX509(t, dev, hubAPIPreview, true)
	x.mustSubscribe(t, hubFilterCredentials)
	x.requestCertificate(t, "pending-op", credentialBody(t, dev.id, hubNewCSR(t, hubNewKey(t), dev.id), ""))
	x.expectAccepted(t, "pending-op")

	called := make(chan error, 1)
	go func() {
		_, _, err := env.hub1().InvokeMethod(context.Background(), "busy", "forever", nil, time.Hour)
		called <- err
	}()
	env.waitLog(t, "direct method invoked")

	if n, _ := hubGoroutines(); n == 0 {
		t.Fatal("no hub goroutine is running: the test sets nothing up")
	}
	closed := make(chan struct{})
	go func() {
		env.close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(hubWait):
		t.Fatal("Emulator.Close did not return")
	}
	select {
	case err := <-called:
		if !errors.Is(err, ErrDeviceNotConnected) {
			t.Errorf("a method call pending at close: %v, want ErrDeviceNotConnected", err)
		}
	case <-time.After(hubWait):
		t.Fatal("InvokeMethod still waiting after Close")
	}
	deadline := time.Now().Add(hubWait)
	for {
		n, stacks := hubGoroutines()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d hub goroutines still running after Close:\n%s", n, stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
