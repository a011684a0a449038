#!/usr/bin/env bash
# Regenerates the Swift for Sources/DTCWire/Protos/*.proto. The output is committed, so a
# normal build never runs protoc; run this after changing a .proto file.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
  echo "gen-proto: protoc is missing; installing Debian's protobuf-compiler" >&2
  apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
fi

scratch=.build-protoc
for plugin in protoc-gen-swift protoc-gen-grpc-swift-2; do
  swift build -c release --scratch-path "$scratch" --product "$plugin" >&2
done
bin="$(swift build -c release --scratch-path "$scratch" --show-bin-path)"

out=Sources/DTCWire/Generated
mkdir -p "$out"
protoc --proto_path=Sources/DTCWire/Protos \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$out" --swift_opt=Visibility=Public \
  --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public \
  Sources/DTCWire/Protos/*.proto
echo "gen-proto: wrote $(ls "$out" | tr '\n' ' ')"
