import DTCCore
import DTCRuntime
import DTCWire
import GRPCCore

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

    /// Each submit of the stream runs as a unary Submit would, at once; its answer joins the
    /// others ready at the time in the next message back.
    func submitStream(
        request: RPCAsyncSequence<Dtc_V1_SubmitBatch, any Error>, response: RPCWriter<Dtc_V1_SubmitAnswers>, context: ServerContext
    ) async throws {
        let answers = BatchQueue<Dtc_V1_SubmitAnswer>()
        try await withThrowingTaskGroup(of: Void.self) { writers in
            writers.addTask {
                while let batch = await answers.next() { try await response.write(.with { $0.answers = batch }) }
            }
            try await withThrowingDiscardingTaskGroup { submits in
                for try await batch in request {
                    for submit in batch.submits {
                        submits.addTask { answers.append(contentsOf: [await self.answer(submit, context: context)]) }
                    }
                }
            }
            answers.close()
            try await writers.waitForAll()
        }
    }

    private func answer(_ submit: Dtc_V1_NumberedSubmit, context: ServerContext) async -> Dtc_V1_SubmitAnswer {
        do {
            let answer = try await self.submit(request: submit.request, context: context)
            return .with { $0.id = submit.id; $0.response = answer }
        } catch let error as RPCError {
            return .with { $0.id = submit.id; $0.errorCode = Int32(error.code.rawValue); $0.errorMessage = error.message }
        } catch {
            return .with { $0.id = submit.id; $0.errorCode = Int32(RPCError.Code.internalError.rawValue); $0.errorMessage = "\(error)" }
        }
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
        case .status(let status, let sender):
            return .with { $0.outcome = outcome(txnID, status, sender.partition) }
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
