module github.com/shoal-dev/shoal/test

go 1.26.8

replace github.com/shoal-dev/shoal => ../

require (
	github.com/opencontainers/go-digest v1.0.0
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0
	go.uber.org/goleak v1.3.0
	golang.org/x/time v0.14.0
)

require (
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
