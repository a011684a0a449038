// swift-tools-version:6.1
import PackageDescription

let grpc: [Target.Dependency] = [
    .product(name: "GRPCCore", package: "grpc-swift-2"),
    .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
    .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
    .product(name: "SwiftProtobuf", package: "swift-protobuf"),
]

let package = Package(
    name: "dtc",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dtc-node", targets: ["dtc-node"]),
        .executable(name: "dtc-rm", targets: ["dtc-rm"]),
        .executable(name: "dtc", targets: ["dtc"]),
        .executable(name: "dtc-sim", targets: ["dtc-sim"]),
        // A PostgreSQL database as a participant (README, "PostgreSQL as a participant").
        .executable(name: "dtc-pg", targets: ["dtc-pg"]),
        // SQL branches for dtc-pg (SQLBranch), for applications that submit them from Swift.
        .library(name: "DTCPostgres", targets: ["DTCPostgres"]),
        // Turns a Swift service into a dtc participant (README, "Write a participant").
        .library(name: "DTCParticipant", targets: ["DTCParticipant"]),
        // Submits txns to a dtc cluster from an application: routing, redirects, retries (no fault injection).
        .library(name: "DTCRouter", targets: ["DTCRouter"]),
        // A participant written against DTCParticipant only, as a user would (Examples/tickets).
        .executable(name: "dtc-example-tickets", targets: ["dtc-example-tickets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Pure protocol: no I/O, no clock, no randomness (shared/DESIGN.md, "Code layout").
        .target(
            name: "DTCCore",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")]
        ),
        .systemLibrary(name: "CLMDB", providers: [.apt(["liblmdb-dev"])]),
        .target(name: "DTCStorage", dependencies: ["CLMDB"]),
        .target(name: "DTCWire", dependencies: ["DTCCore"] + grpc, exclude: ["Protos"]),
        // What dtc's processes and the CLI share: cluster config, the gRPC client pool (which
        // installs the interceptors its caller gives it), batching, the process clock.
        .target(name: "DTCRuntime", dependencies: ["DTCCore", "DTCWire"] + grpc),
        // Fault injection on the gRPC links: the fault model, the interceptors, the admin RPC.
        .target(name: "DTCFaults", dependencies: ["DTCCore", "DTCWire", "DTCRuntime"] + grpc),
        // The client side of the coordinator API: leader routing, redirects, idempotent retries.
        .target(
            name: "DTCRouter",
            dependencies: [
                "DTCCore", "DTCWire", "DTCRuntime",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
            ]
        ),
        .target(
            name: "DTCNode",
            dependencies: [
                "DTCCore", "DTCStorage", "DTCWire", "DTCRuntime", "DTCFaults",
                .product(name: "Logging", package: "swift-log"),
            ] + grpc
        ),
        // The participant library: drives ParticipantMachine for a user's ParticipantLogic.
        .target(
            name: "DTCParticipant",
            dependencies: [
                "DTCCore", "DTCStorage", "DTCWire", "DTCRuntime", "DTCRouter", "DTCFaults",
                .product(name: "Logging", package: "swift-log"),
            ] + grpc
        ),
        .executableTarget(
            name: "dtc-node",
            dependencies: [
                "DTCNode", "DTCRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // dtc's example domain (inventory, orders, accounts): pure logic on DTCCore's contract.
        .target(name: "DTCShop", dependencies: ["DTCCore"]),
        .executableTarget(
            name: "dtc-rm",
            dependencies: [
                "DTCParticipant", "DTCShop", "DTCRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // PostgreSQL as a participant: the contract kept with PREPARE TRANSACTION (dtc-pg).
        .target(
            name: "DTCPostgres",
            dependencies: [
                "DTCCore", "DTCWire", "DTCRuntime", "DTCRouter", "DTCFaults",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ] + grpc
        ),
        .executableTarget(
            name: "dtc-pg",
            dependencies: ["DTCPostgres", "DTCRuntime", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The independent history checker: pure functions over a client history and what the
        // RMs hold, so `dtc verify` and its tests share them.
        .target(name: "DTCVerify", dependencies: ["DTCCore"]),
        .executableTarget(
            name: "dtc",
            dependencies: [
                "DTCRouter", "DTCRuntime", "DTCCore", "DTCWire", "DTCFaults", "DTCVerify", "DTCShop", "DTCPostgres", "DTCStorage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ] + grpc
        ),
        // The ticket-booking example participant: depends on the public product alone.
        .executableTarget(
            name: "dtc-example-tickets", dependencies: ["DTCParticipant"], path: "Examples/tickets",
            exclude: ["README.md", "cluster.json"]
        ),
        .target(name: "DTCSimulation", dependencies: ["DTCCore", "DTCShop"]),
        .executableTarget(
            name: "dtc-sim",
            dependencies: ["DTCCore", "DTCSimulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "DTCCoreTests", dependencies: ["DTCCore"], exclude: ["Transcripts"]),
        .testTarget(name: "DTCSimulationTests", dependencies: ["DTCSimulation", "DTCCore", "DTCShop"]),
        .testTarget(name: "DTCShopTests", dependencies: ["DTCShop", "DTCCore"]),
        .testTarget(name: "DTCParticipantTests", dependencies: ["DTCParticipant"]),
        .testTarget(name: "DTCStorageTests", dependencies: ["DTCStorage"]),
        .testTarget(
            name: "DTCPostgresTests",
            dependencies: ["DTCPostgres", "DTCRuntime", "DTCCore", .product(name: "PostgresNIO", package: "postgres-nio")]
        ),
        .testTarget(name: "DTCVerifyTests", dependencies: ["DTCVerify", "DTCCore"]),
        .testTarget(
            name: "DTCFaultsTests",
            dependencies: [
                "DTCFaults", "DTCWire",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
            ]
        ),
        .testTarget(
            name: "DTCNodeTests",
            dependencies: [
                "DTCNode", "DTCRuntime", "DTCCore", "DTCWire",
                .product(name: "Logging", package: "swift-log"),
            ] + grpc
        ),
    ]
)
