package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// BenchmarkRegistrations runs whole registrations with certificate issuance
// against one emulator, from many devices at once, each on its own TLS
// connection: connect, subscribe, register with a CSR, poll, check the
// issued chain, disconnect. The devices run in the same process, so their
// TLS and key work counts against the figure too. The goal is at least
// 10,000 registrations a minute (167/s) on two cores.
func BenchmarkRegistrations(b *testing.B) {
	groupKey := dpsKey("bench")
	e, ep := startDPSEmulator(b, func(c *Config) {
		c.Enrollments = []Enrollment{dpsGroupEnrollment("bench", groupKey)}
	})
	e.dps.assignDelay = 0     // measure the work, not the emulated wait
	e.dps.pollLimit = 1 << 20 // the benchmark polls fast; DPS's per-device limit is not what it measures
	roots := dpsRoots(b, ep)
	gk, err := sas.DecodeKey(groupKey)
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.SetParallelism(24) // devices in flight per core: enough to cover the answer latency
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			regID := "bench-" + strconv.FormatInt(seq.Add(1), 10)
			if err := benchRegistration(ep, roots, gk, regID); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "registrations/s")
}

// benchRegistration is one device's registration; it returns an error
// instead of failing, as RunParallel's goroutines must.
func benchRegistration(ep *Endpoints, roots *x509.CertPool, groupKey []byte, regID string) error {
	password := sas.Sign(sas.DPSResource(ep.IDScope, regID), sas.DeriveDeviceKey(groupKey, regID),
		sas.KeyNameRegistration, time.Now().Add(time.Hour))
	c := mqtt.NewClient(dpsDial{regID: regID, password: password}.options(ep, roots))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("%s: connect: %v", regID, tok.Error())
	}
	defer c.Disconnect(0)
	answers := make(chan mqtt.Message, 4)
	if tok := c.Subscribe(dpsResponseFilter, 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("%s: subscribe: %v", regID, tok.Error())
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: regID}}, key)
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`{"registrationId":%q,"csr":%q}`, regID, base64.StdEncoding.EncodeToString(csr))
	status, st, err := benchExchange(c, answers, "$dps/registrations/PUT/iotdps-register/?$rid=0", []byte(body))
	if err != nil || status != 202 {
		return fmt.Errorf("%s: register: %d %v", regID, status, err)
	}
	deadline := time.Now().Add(30 * time.Second) // under load, issuance can lag
	for i := 1; ; i++ {
		status, st, err = benchExchange(c, answers, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="+strconv.Itoa(i)+"&operationId="+st.OperationID, nil)
		switch {
		case err != nil:
			return fmt.Errorf("%s: poll: %w", regID, err)
		case status == 202 && time.Now().Before(deadline):
			time.Sleep(5 * time.Millisecond)
			continue
		case status != 200 || st.RegistrationState == nil || len(st.RegistrationState.IssuedCertificateChain) != 3:
			return fmt.Errorf("%s: poll: %d %+v", regID, status, st)
		}
		break
	}
	der, err := base64.StdEncoding.DecodeString(st.RegistrationState.IssuedCertificateChain[0])
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if !key.PublicKey.Equal(leaf.PublicKey) || leaf.Subject.CommonName != regID {
		return fmt.Errorf("%s: the issued leaf is not for this device", regID)
	}
	return nil
}

func benchExchange(c mqtt.Client, answers <-chan mqtt.Message, topic string, body []byte) (int, wireStatus, error) {
	if tok := c.Publish(topic, 1, false, body); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return 0, wireStatus{}, fmt.Errorf("publish: %v", tok.Error())
	}
	select {
	case m := <-answers:
		rest := strings.TrimPrefix(m.Topic(), dpsResponsePrefix)
		status, err := strconv.Atoi(rest[:strings.IndexByte(rest, '/')])
		if err != nil {
			return 0, wireStatus{}, err
		}
		var st wireStatus
		if status < 300 {
			err = json.Unmarshal(m.Payload(), &st)
		}
		return status, st, err
	case <-time.After(30 * time.Second):
		return 0, wireStatus{}, fmt.Errorf("no answer to %s", topic)
	}
}
