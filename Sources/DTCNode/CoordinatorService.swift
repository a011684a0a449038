import DTCCore
import DTCRuntime
import DTCWire
import GRPCCore
import Synchronization

/// The coordinator's gRPC API. It validates every request before the core sees it: bad input
/// gets INVALID_ARGUMENT naming the field, and nothing is logged or prepared.
struct CoordinatorService: Dtc_V1_Coordinator.SimpleServiceProtocol {
    let runtime: NodeRuntime
    /// The participant (RM) names in the cluster config.
    let participants: Set<String>
    let limits: Limits

    func submit(request: Dtc_V1_SubmitRequest, context: ServerContext) async throws -> Dtc_V1_SubmitResponse {
        let (txnID, branches) = try validated(request)
        return try answer(txnID, await runtime.submit(txnID, branches: branches))
    }

    /// Each submit of the stream is answered as a unary Submit would be; the valid ones of a
    /// message go to the node in one step (their STARTs share a write and a message to each
    /// follower), and each answer joins the others ready at the time in the next message back.
    func submitStream(
        request: RPCAsyncSequence<Dtc_V1_SubmitBatch, any Error>, response: RPCWriter<Dtc_V1_SubmitAnswers>, context: ServerContext
    ) async throws {
        let answers = BatchQueue<Dtc_V1_SubmitAnswer>()
        try await withThrowingTaskGroup(of: Void.self) { writers in
            writers.addTask {
                while let batch = await answers.next() { try await response.write(.with { $0.answers = batch }) }
            }
            let pending = PendingAnswers()
            for try await batch in request {
                var accepted: [(id: UInt64, txnID: TxnID, branches: [Branch])] = []
                for submit in batch.submits {
                    do {
                        let (txnID, branches) = try validated(submit.request)
                        accepted.append((submit.id, txnID, branches))
                    } catch {
                        answers.append(contentsOf: [Self.failure(error, id: submit.id)])
                    }
                }
                guard !accepted.isEmpty else { continue }
                pending.add(accepted.count)
                let submitted = accepted
                await runtime.submit(batch: submitted.map { ($0.txnID, $0.branches) }) { index, answer in
                    let (id, txnID, _) = submitted[index]
                    do {
                        let response = try self.answer(txnID, answer)
                        answers.append(contentsOf: [.with { $0.id = id; $0.response = response }])
                    } catch {
                        answers.append(contentsOf: [Self.failure(error, id: id)])
                    }
                    pending.done()
                }
            }
            // The client closed its side: answer what is in flight, then end the stream.
            await pending.allDone()
            answers.close()
            try await writers.waitForAll()
        }
    }

    private static func failure(_ error: any Error, id: UInt64) -> Dtc_V1_SubmitAnswer {
        let rpc = error as? RPCError ?? RPCError(code: .internalError, message: "\(error)")
        return .with { $0.id = id; $0.errorCode = Int32(rpc.code.rawValue); $0.errorMessage = rpc.message }
    }

    func getTxn(request: Dtc_V1_GetTxnRequest, context: ServerContext) async throws -> Dtc_V1_GetTxnResponse {
        let txnID = try invalidArgument { () throws(ValidationError) in try TxnID(validating: request.txnID, limits: limits) }
        switch await runtime.txn(txnID) {
        case .snapshot(let snapshot):
            return .with { $0.txn = detail(snapshot) }
        case .redirect(let leader, let partition):
            return .with { $0.redirect = runtime.redirect(to: leader, partition: partition) }
        case .notFound:
            throw RPCError(code: .notFound, message: "txn '\(txnID)' is unknown to \(runtime.name) (never submitted, or forgotten after its retention)")
        case let other:
            _ = try answer(txnID, other)
            throw RPCError(code: .internalError, message: "no answer for \(txnID)")
        }
    }

    func status(request: Dtc_V1_StatusRequest, context: ServerContext) async throws -> Dtc_V1_StatusResponse {
        await runtime.status()
    }

    func resolve(request: Dtc_V1_ResolveRequest, context: ServerContext) async throws -> Dtc_V1_ResolveResponse {
        let txnID = try invalidArgument { () throws(ValidationError) in try TxnID(validating: request.txnID, limits: limits) }
        // A partition that is not the txn's own would record a stray ABORT there, and could tell
        // a participant ABORTED for a txn its real partition committed.
        let own = runtime.map.partition(of: txnID)
        guard request.partition == own else {
            throw RPCError(code: .invalidArgument, message: "partition \(request.partition) is not the partition of txn '\(txnID)' (\(own)); see docs/participant-protocol.md, \"Partitions\"")
        }
        let answer = try answer(txnID, await runtime.resolve(txnID, partition: request.partition))
        return .with {
            switch answer.result {
            case .outcome(let outcome): $0.outcome = outcome
            case .redirect(let redirect): $0.redirect = redirect
            case nil: break
            }
        }
    }

    // MARK: - Helpers

    private func answer(_ txnID: TxnID, _ answer: NodeAnswer) throws -> Dtc_V1_SubmitResponse {
        switch answer {
        case .status(let status, let sender, let attempts):
            return .with {
                $0.outcome = outcome(txnID, status, sender.partition)
                $0.outcome.attempts = attempts
            }
        case .redirect(let leader, let partition):
            return .with { $0.redirect = runtime.redirect(to: leader, partition: partition) }
        case .unavailable(let reason):
            throw RPCError(code: .unavailable, message: reason)
        case .overloaded(let inFlight):
            throw RPCError(code: .resourceExhausted, message: "overloaded: \(inFlight) txns in flight; retry with the same txn_id")
        case .idTaken:
            throw RPCError(code: .failedPrecondition, message: "txn_id '\(txnID)' is taken by a different txn (other participants or payloads); choose a new txn_id")
        case .snapshot, .notFound:
            throw RPCError(code: .internalError, message: "unexpected answer for \(txnID)")
        }
    }

    private func validated(_ request: Dtc_V1_SubmitRequest) throws -> (TxnID, [Branch]) {
        try invalidArgument { () throws(ValidationError) in
            let branches = request.branches.map(Branch.init(wire:))
            let txnID = try validateSubmission(txnID: request.txnID, branches: branches, participants: participants, limits: limits)
            return (txnID, branches)
        }
    }

    private func invalidArgument<T>(_ body: () throws(ValidationError) -> T) throws(RPCError) -> T {
        do {
            return try body()
        } catch {
            throw RPCError(code: .invalidArgument, message: error.description)
        }
    }

    private func outcome(_ txnID: TxnID, _ status: TxnStatus, _ partition: UInt32) -> Dtc_V1_TxnOutcome {
        .with {
            $0.txnID = txnID.rawValue
            $0.state = status.wireState
            $0.reason = status.reason.text
            $0.abortCause = status.reason.cause.wire
            $0.partition = partition
            $0.node = runtime.name
        }
    }

    private func detail(_ snapshot: TxnSnapshot) -> Dtc_V1_TxnDetail {
        .with {
            $0.outcome = outcome(snapshot.txnID, snapshot.status, snapshot.partition)
            $0.startStamp = snapshot.stamp
            $0.epochCounter = snapshot.epoch.counter
            $0.branches = snapshot.branches.map { branch in
                .with {
                    $0.rm = branch.summary.rm
                    $0.kind = branch.summary.kind
                    $0.payloadBytes = UInt32(branch.summary.payloadBytes)
                    $0.state = branch.progress.wireState
                    if case .votedNo(let reason) = branch.progress {
                        $0.reason = reason.text
                        $0.cause = reason.cause.wire
                    }
                }
            }
        }
    }
}

/// Submits of a stream handed to the node and not answered yet, so the stream ends only once
/// each has its answer.
final class PendingAnswers: Sendable {
    private let state = Mutex<(count: Int, waiter: CheckedContinuation<Void, Never>?)>((0, nil))

    func add(_ count: Int) {
        state.withLock { $0.count += count }
    }

    func done() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.count -= 1
            guard state.count == 0 else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }

    func allDone() async {
        await withCheckedContinuation { continuation in
            let isDone = state.withLock { state -> Bool in
                if state.count == 0 { return true }
                state.waiter = continuation
                return false
            }
            if isDone { continuation.resume() }
        }
    }
}
