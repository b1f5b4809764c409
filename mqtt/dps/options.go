package dps

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Defaults for Options fields left zero.
const (
	DefaultEndpoint   = "global.azure-devices-provisioning.net:8883"
	DefaultAPIVersion = "2025-07-01-preview"
	// DefaultConnectTimeout bounds TCP, TLS and the CONNACK.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultResponseTimeout bounds the wait for DPS's answer to one request;
	// SDK samples give up after about 30 s, issuance can take longer.
	DefaultResponseTimeout = 60 * time.Second
	// DefaultTimeout bounds a whole Register call, polls included.
	DefaultTimeout = 10 * time.Minute
	// DefaultTokenLifetime is the SAS token's validity. Only the connection
	// itself needs it, so it is short: a leaked token is soon worthless.
	DefaultTokenLifetime = time.Hour

	defaultPort      = 8883
	defaultKeepAlive = 60 * time.Second
)

// Options configure a Client. Zero values take the defaults above; IDScope,
// RegistrationID and Auth are required.
type Options struct {
	// Endpoint is the DPS device endpoint, host[:port].
	Endpoint string
	// IDScope is the DPS instance's ID scope, such as 0ne00000001.
	IDScope string
	// RegistrationID is the device's registration ID: up to 128 letters,
	// digits and - . _ :, not starting or ending with a symbol. It is also
	// the MQTT client ID, and the CN of any CSR.
	RegistrationID string
	// Auth is the onboarding credential: SymmetricKey, GroupKey or X509.
	Auth Auth
	// TrustBundleFile is a PEM file of extra CA certificates to trust for
	// the server (the emulator's, or a TLS-inspecting proxy's).
	TrustBundleFile string
	// APIVersion is the DPS api-version; CSR issuance needs
	// 2025-07-01-preview or later.
	APIVersion string
	// ClientVersion identifies the agent to DPS, e.g. "dpsagent/1.0".
	ClientVersion string
	// Logger receives the client's decisions; nil discards them.
	Logger *zap.Logger
	// Now is the clock for SAS expiry and request pacing; nil is time.Now.
	Now func() time.Time

	// ConnectTimeout bounds TCP, TLS and the CONNACK.
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the answer to each request.
	ResponseTimeout time.Duration
	// Timeout bounds a whole Register call, waits between polls included.
	Timeout time.Duration
	// TokenLifetime is how long the SAS token is valid.
	TokenLifetime time.Duration
}

func (o *Options) defaults() {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if o.APIVersion == "" {
		o.APIVersion = DefaultAPIVersion
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.ConnectTimeout, DefaultConnectTimeout},
		{&o.ResponseTimeout, DefaultResponseTimeout},
		{&o.Timeout, DefaultTimeout},
		{&o.TokenLifetime, DefaultTokenLifetime},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
}

func (o *Options) validate() error {
	if o.IDScope == "" {
		return errors.New("the ID scope is empty: copy it from the DPS instance's overview page (id_scope)")
	}
	if !validIDScope(o.IDScope) {
		return fmt.Errorf("ID scope %q: use the letters and digits shown on the DPS instance's overview page, such as 0ne00000001", o.IDScope)
	}
	if err := checkRegistrationID(o.RegistrationID); err != nil {
		return err
	}
	if strings.ContainsAny(o.APIVersion, "&/#+ ") {
		return fmt.Errorf("api-version %q: use a date such as %s", o.APIVersion, DefaultAPIVersion)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"connect timeout", o.ConnectTimeout},
		{"response timeout", o.ResponseTimeout},
		{"timeout", o.Timeout},
		{"token lifetime", o.TokenLifetime},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s %s is negative", d.name, d.v)
		}
	}
	return o.Auth.validate(o.RegistrationID)
}

// validIDScope accepts what DPS issues (0ne followed by hex digits) and any
// other run of letters and digits, since the scope is opaque to devices; what
// matters is that it cannot break the user name or the SAS resource.
func validIDScope(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) {
			return false
		}
	}
	return true
}

// checkRegistrationID applies DPS's documented rule; anything else would be
// refused by DPS, and could break the MQTT topics and user name.
func checkRegistrationID(id string) error {
	const rule = "use up to 128 letters, digits and - . _ :, not starting or ending with a symbol"
	if id == "" {
		return errors.New("the registration ID is empty (registration_id)")
	}
	ok := len(id) <= 128 && isAlnum(rune(id[0])) && isAlnum(rune(id[len(id)-1]))
	for _, r := range id {
		ok = ok && (isAlnum(r) || strings.ContainsRune("-._:", r))
	}
	if !ok {
		return fmt.Errorf("registration ID %q: %s", clip(id, 140), rule)
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
