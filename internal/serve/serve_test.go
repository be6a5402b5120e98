package serve

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestHTTPDrains: a request in progress when the context ends still gets its answer, new
// connections are refused, and HTTP returns nil.
func TestHTTPDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- HTTP(ctx, srv, ln) }()

	type answer struct {
		body string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{string(b), err}
	}()
	<-started
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts 5 s after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if a := <-got; a.err != nil || a.body != "done" {
		t.Errorf("request in progress at shutdown got %q, %v; want \"done\"", a.body, a.err)
	}
	if err := <-errc; err != nil {
		t.Errorf("HTTP() = %v after a shutdown, want nil", err)
	}
}

// TestHTTPServeError: a listener that fails is reported at once.
func TestHTTPServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := HTTP(t.Context(), &http.Server{}, ln); err == nil {
		t.Error("HTTP() on a closed listener = nil, want an error")
	}
}
