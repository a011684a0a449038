import Foundation

@testable import DTCStorage

/// A fresh directory per test, removed when the test ends.
struct TemporaryDirectory: ~Copyable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("dtc-storage-test-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// An environment, committer and row store over one path, closed in the order LMDB needs.
final class StoreFixture: Sendable {
    let environment: LMDBEnvironment
    let committer: GroupCommitter
    let store: RowStore

    init(path: String) throws {
        environment = try LMDBEnvironment(path: path, mapSizeBytes: 64 << 20)
        committer = GroupCommitter(environment: environment)
        store = try RowStore(environment: environment, committer: committer)
    }

    /// Drains the committer and closes the environment so the path can be reopened.
    func close() {
        committer.close()
        environment.close()
    }
}

/// Holds the committer's writer thread inside a group until released, so a test can queue
/// work deterministically behind it instead of racing the writer.
final class WriterGate: @unchecked Sendable {
    private let released = DispatchSemaphore(value: 0)

    /// Returns once the writer thread is running the blocking closure.
    init(_ committer: GroupCommitter) async {
        let released = released
        await withCheckedContinuation { (started: CheckedContinuation<Void, Never>) in
            committer.enqueue { _ in
                started.resume()
                released.wait()
            }
        }
    }

    /// Releases the writer from another thread once `count` items wait in the queue.
    func release(whenQueued count: Int, in committer: GroupCommitter) {
        let released = released
        Thread {
            committer.waitUntilQueued(atLeast: count)
            released.signal()
        }.start()
    }
}

struct Planted: Error, Equatable {}
