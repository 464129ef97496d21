//! The method class table: whether a call litd serves is a **read** or a **write**, for the rate
//! limiter (`layers::rate_limit`), and which gRPC method a REST path is the twin of. It never
//! decides what a caller may do (litd checks macaroons); it only decides which limit a call
//! is counted against.
//!
//! The rule is LiT's (LiT's `rules/rate_limit.go`): a method is a read
//! when it is known and **every** permission it requires has action `read`; anything else,
//! including a method not in the table, is a write. Where the facts come from:
//!
//! - `litrpc.*`: LiT's `perms/permissions.go` (`RequiredPermissions`, v0.17.2-alpha); `litrpc.Status/
//!   SubServerStatus` is whitelisted (an empty op list, vacuously all-read), so it is a read;
//! - `lnrpc.Lightning`: lnd's `MainRPCServerPermissions` (`rpcserver.go`), checked against the
//!   source; `generate` actions (BakeMacaroon, signrpc's signing calls) are not `read`, so
//!   writes;
//! - lnd's sub-servers (`routerrpc`, `walletrpc`, `signrpc`, `chainrpc`, `invoicesrpc`,
//!   `peersrpc`, `wtclientrpc`, `watchtowerrpc`, `autopilotrpc`, `neutrinorpc`, `devrpc`,
//!   `verrpc`), loop (`looprpc`, `loopd/perms`), pool (`poolrpc`, `perms`), faraday (`frdrpc`,
//!   `frdrpcserver/perms`) and taproot-assets (`taprpc`, `mintrpc`, `assetwalletrpc`,
//!   `universerpc`, `rfqrpc`, `tapchannelrpc`, `priceoraclerpc`, `tapdevrpc`, tapd's
//!   `perms.go`): from their public permission maps as recalled, not re-read line by line;
//!   where recall was unsure the method is listed as a write (the side litd errs on too);
//! - lnd's unauthenticated `WalletUnlocker` and `State` calls: `GenSeed`, `GetState` and
//!   `SubscribeState` are reads (empty op lists, like SubServerStatus); `InitWallet`,
//!   `UnlockWallet` and `ChangePassword` are counted as **writes** on purpose: they change
//!   state and are password-guessing targets, so they get the tighter limit;
//! - REST: litd's grpc-gateway rules (`litrpc/*.yaml`) and the most used lnd
//!   (`lightning.yaml`, `router.yaml`, `walletkit.yaml`, `invoices.yaml`) and loop mappings.
//!   A REST path not in the table is a read for GET (and HEAD) and a write otherwise; the table
//!   matters for the exceptions (`GET /v1/newaddress` writes; `POST /v1/switch`,
//!   `POST /v1/verifymessage`, `POST /v1/firewall/actions` ... read).

use std::{collections::HashMap, sync::LazyLock};

use http::Method;

use super::{is_grpc_shaped, is_rest_path};

/// Which limit a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every permission the method needs has action `read`.
    Read,
    /// Anything else, including unknown methods.
    Write,
}

impl Class {
    /// A bounded label for metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
        }
    }
}

use Class::{Read as R, Write as W};

/// Every gRPC method litd serves or proxies that litgate knows, sorted by path (checked by a
/// test), with its class.
pub static GRPC_METHODS: &[(&str, Class)] = &[
    ("/assetwalletrpc.AssetWallet/AnchorVirtualPsbts", W),
    ("/assetwalletrpc.AssetWallet/CommitVirtualPsbts", W),
    ("/assetwalletrpc.AssetWallet/DeclareScriptKey", W),
    ("/assetwalletrpc.AssetWallet/FundVirtualPsbt", W),
    ("/assetwalletrpc.AssetWallet/NextInternalKey", W),
    ("/assetwalletrpc.AssetWallet/NextScriptKey", W),
    ("/assetwalletrpc.AssetWallet/ProveAssetOwnership", R),
    ("/assetwalletrpc.AssetWallet/PublishAndLogTransfer", W),
    ("/assetwalletrpc.AssetWallet/QueryInternalKey", R),
    ("/assetwalletrpc.AssetWallet/QueryScriptKey", R),
    ("/assetwalletrpc.AssetWallet/RemoveUTXOLease", W),
    ("/assetwalletrpc.AssetWallet/SignVirtualPsbt", W),
    ("/assetwalletrpc.AssetWallet/VerifyAssetOwnership", R),
    ("/autopilotrpc.Autopilot/ModifyStatus", W),
    ("/autopilotrpc.Autopilot/QueryScores", R),
    ("/autopilotrpc.Autopilot/SetScores", W),
    ("/autopilotrpc.Autopilot/Status", R),
    ("/chainrpc.ChainKit/GetBestBlock", R),
    ("/chainrpc.ChainKit/GetBlock", R),
    ("/chainrpc.ChainKit/GetBlockHash", R),
    ("/chainrpc.ChainKit/GetBlockHeader", R),
    ("/chainrpc.ChainNotifier/RegisterBlockEpochNtfn", R),
    ("/chainrpc.ChainNotifier/RegisterConfirmationsNtfn", R),
    ("/chainrpc.ChainNotifier/RegisterSpendNtfn", R),
    ("/devrpc.Dev/ImportGraph", W),
    ("/devrpc.Dev/Quiesce", W),
    ("/frdrpc.FaradayServer/ChannelInsights", R),
    ("/frdrpc.FaradayServer/CloseReport", R),
    ("/frdrpc.FaradayServer/ExchangeRate", R),
    ("/frdrpc.FaradayServer/NodeAudit", R),
    ("/frdrpc.FaradayServer/OutlierRecommendations", R),
    ("/frdrpc.FaradayServer/RevenueReport", R),
    ("/frdrpc.FaradayServer/ThresholdRecommendations", R),
    ("/invoicesrpc.Invoices/AddHoldInvoice", W),
    ("/invoicesrpc.Invoices/CancelInvoice", W),
    ("/invoicesrpc.Invoices/HtlcModifier", W),
    ("/invoicesrpc.Invoices/LookupInvoiceV2", R),
    ("/invoicesrpc.Invoices/SettleInvoice", W),
    ("/invoicesrpc.Invoices/SubscribeSingleInvoice", R),
    ("/litrpc.Accounts/AccountInfo", R),
    ("/litrpc.Accounts/AccountPayments", R),
    ("/litrpc.Accounts/CreateAccount", W),
    ("/litrpc.Accounts/CreditAccount", W),
    ("/litrpc.Accounts/DebitAccount", W),
    ("/litrpc.Accounts/ListAccounts", R),
    ("/litrpc.Accounts/RemoveAccount", W),
    ("/litrpc.Accounts/UpdateAccount", W),
    ("/litrpc.Autopilot/AddAutopilotSession", W),
    ("/litrpc.Autopilot/ListAutopilotFeatures", R),
    ("/litrpc.Autopilot/ListAutopilotSessions", R),
    ("/litrpc.Autopilot/RevokeAutopilotSession", W),
    ("/litrpc.Firewall/ListActions", R),
    ("/litrpc.Firewall/PrivacyMapConversion", R),
    ("/litrpc.Proxy/BakeSuperMacaroon", W),
    ("/litrpc.Proxy/GetInfo", R),
    ("/litrpc.Proxy/StopDaemon", W),
    ("/litrpc.Sessions/AddSession", W),
    ("/litrpc.Sessions/ListSessions", R),
    ("/litrpc.Sessions/RevokeSession", W),
    ("/litrpc.Status/SubServerStatus", R),
    ("/lnrpc.Lightning/AbandonChannel", W),
    ("/lnrpc.Lightning/AddInvoice", W),
    ("/lnrpc.Lightning/BakeMacaroon", W),
    ("/lnrpc.Lightning/BatchOpenChannel", W),
    ("/lnrpc.Lightning/ChannelAcceptor", W),
    ("/lnrpc.Lightning/ChannelBalance", R),
    ("/lnrpc.Lightning/CheckMacaroonPermissions", R),
    ("/lnrpc.Lightning/CloseChannel", W),
    ("/lnrpc.Lightning/ClosedChannels", R),
    ("/lnrpc.Lightning/ConnectPeer", W),
    ("/lnrpc.Lightning/DebugLevel", W),
    ("/lnrpc.Lightning/DecodePayReq", R),
    ("/lnrpc.Lightning/DeleteAllPayments", W),
    ("/lnrpc.Lightning/DeleteMacaroonID", W),
    ("/lnrpc.Lightning/DeletePayment", W),
    ("/lnrpc.Lightning/DescribeGraph", R),
    ("/lnrpc.Lightning/DisconnectPeer", W),
    ("/lnrpc.Lightning/EstimateFee", R),
    ("/lnrpc.Lightning/ExportAllChannelBackups", R),
    ("/lnrpc.Lightning/ExportChannelBackup", R),
    ("/lnrpc.Lightning/FeeReport", R),
    ("/lnrpc.Lightning/ForwardingHistory", R),
    ("/lnrpc.Lightning/FundingStateStep", W),
    ("/lnrpc.Lightning/GetChanInfo", R),
    ("/lnrpc.Lightning/GetDebugInfo", R),
    ("/lnrpc.Lightning/GetInfo", R),
    ("/lnrpc.Lightning/GetNetworkInfo", R),
    ("/lnrpc.Lightning/GetNodeInfo", R),
    ("/lnrpc.Lightning/GetNodeMetrics", R),
    ("/lnrpc.Lightning/GetRecoveryInfo", R),
    ("/lnrpc.Lightning/GetTransactions", R),
    ("/lnrpc.Lightning/ListAliases", R),
    ("/lnrpc.Lightning/ListChannels", R),
    ("/lnrpc.Lightning/ListInvoices", R),
    ("/lnrpc.Lightning/ListMacaroonIDs", R),
    ("/lnrpc.Lightning/ListPayments", R),
    ("/lnrpc.Lightning/ListPeers", R),
    ("/lnrpc.Lightning/ListPermissions", R),
    ("/lnrpc.Lightning/ListUnspent", R),
    ("/lnrpc.Lightning/LookupHtlcResolution", R),
    ("/lnrpc.Lightning/LookupInvoice", R),
    ("/lnrpc.Lightning/NewAddress", W),
    ("/lnrpc.Lightning/OpenChannel", W),
    ("/lnrpc.Lightning/OpenChannelSync", W),
    ("/lnrpc.Lightning/PendingChannels", R),
    ("/lnrpc.Lightning/QueryRoutes", R),
    ("/lnrpc.Lightning/RegisterRPCMiddleware", W),
    ("/lnrpc.Lightning/RestoreChannelBackups", W),
    ("/lnrpc.Lightning/SendCoins", W),
    ("/lnrpc.Lightning/SendCustomMessage", W),
    ("/lnrpc.Lightning/SendMany", W),
    ("/lnrpc.Lightning/SendPayment", W),
    ("/lnrpc.Lightning/SendPaymentSync", W),
    ("/lnrpc.Lightning/SendToRoute", W),
    ("/lnrpc.Lightning/SendToRouteSync", W),
    ("/lnrpc.Lightning/SignMessage", W),
    ("/lnrpc.Lightning/StopDaemon", W),
    ("/lnrpc.Lightning/SubscribeChannelBackups", R),
    ("/lnrpc.Lightning/SubscribeChannelEvents", R),
    ("/lnrpc.Lightning/SubscribeChannelGraph", R),
    ("/lnrpc.Lightning/SubscribeCustomMessages", R),
    ("/lnrpc.Lightning/SubscribeInvoices", R),
    ("/lnrpc.Lightning/SubscribePeerEvents", R),
    ("/lnrpc.Lightning/SubscribeTransactions", R),
    ("/lnrpc.Lightning/UpdateChannelPolicy", W),
    ("/lnrpc.Lightning/VerifyChanBackup", R),
    ("/lnrpc.Lightning/VerifyMessage", R),
    ("/lnrpc.Lightning/WalletBalance", R),
    ("/lnrpc.State/GetState", R),
    ("/lnrpc.State/SubscribeState", R),
    ("/lnrpc.WalletUnlocker/ChangePassword", W),
    ("/lnrpc.WalletUnlocker/GenSeed", R),
    ("/lnrpc.WalletUnlocker/InitWallet", W),
    ("/lnrpc.WalletUnlocker/UnlockWallet", W),
    ("/looprpc.SwapClient/AbandonSwap", W),
    ("/looprpc.SwapClient/FetchL402Token", W),
    ("/looprpc.SwapClient/GetInfo", R),
    ("/looprpc.SwapClient/GetL402Tokens", R),
    ("/looprpc.SwapClient/GetLiquidityParams", R),
    ("/looprpc.SwapClient/GetLoopInQuote", R),
    ("/looprpc.SwapClient/GetLoopInTerms", R),
    ("/looprpc.SwapClient/GetLsatTokens", R),
    ("/looprpc.SwapClient/GetStaticAddressSummary", R),
    ("/looprpc.SwapClient/InstantOut", W),
    ("/looprpc.SwapClient/InstantOutQuote", R),
    ("/looprpc.SwapClient/ListInstantOuts", R),
    ("/looprpc.SwapClient/ListReservations", R),
    ("/looprpc.SwapClient/ListStaticAddressDeposits", R),
    ("/looprpc.SwapClient/ListStaticAddressSwaps", R),
    ("/looprpc.SwapClient/ListSwaps", R),
    ("/looprpc.SwapClient/ListUnspentDeposits", R),
    ("/looprpc.SwapClient/LoopIn", W),
    ("/looprpc.SwapClient/LoopOut", W),
    ("/looprpc.SwapClient/LoopOutQuote", R),
    ("/looprpc.SwapClient/LoopOutTerms", R),
    ("/looprpc.SwapClient/Monitor", R),
    ("/looprpc.SwapClient/NewStaticAddress", W),
    ("/looprpc.SwapClient/Probe", W),
    ("/looprpc.SwapClient/SetLiquidityParams", W),
    ("/looprpc.SwapClient/StaticAddressLoopIn", W),
    ("/looprpc.SwapClient/SuggestSwaps", R),
    ("/looprpc.SwapClient/SwapInfo", R),
    ("/looprpc.SwapClient/WithdrawDeposits", W),
    ("/mintrpc.Mint/CancelBatch", W),
    ("/mintrpc.Mint/FinalizeBatch", W),
    ("/mintrpc.Mint/FundBatch", W),
    ("/mintrpc.Mint/ListBatches", R),
    ("/mintrpc.Mint/MintAsset", W),
    ("/mintrpc.Mint/SealBatch", W),
    ("/mintrpc.Mint/SubscribeMintEvents", R),
    ("/neutrinorpc.NeutrinoKit/AddPeer", W),
    ("/neutrinorpc.NeutrinoKit/DisconnectPeer", W),
    ("/neutrinorpc.NeutrinoKit/GetBlock", R),
    ("/neutrinorpc.NeutrinoKit/GetBlockHash", R),
    ("/neutrinorpc.NeutrinoKit/GetBlockHeader", R),
    ("/neutrinorpc.NeutrinoKit/GetCFilter", R),
    ("/neutrinorpc.NeutrinoKit/IsBanned", R),
    ("/neutrinorpc.NeutrinoKit/Status", R),
    ("/peersrpc.Peers/UpdateNodeAnnouncement", W),
    ("/poolrpc.Trader/AccountModificationFees", R),
    ("/poolrpc.Trader/AuctionFee", R),
    ("/poolrpc.Trader/BatchSnapshot", R),
    ("/poolrpc.Trader/BatchSnapshots", R),
    ("/poolrpc.Trader/BumpAccountFee", W),
    ("/poolrpc.Trader/CancelOrder", W),
    ("/poolrpc.Trader/CancelSidecar", W),
    ("/poolrpc.Trader/CloseAccount", W),
    ("/poolrpc.Trader/DecodeSidecarTicket", R),
    ("/poolrpc.Trader/DepositAccount", W),
    ("/poolrpc.Trader/ExpectSidecarChannel", W),
    ("/poolrpc.Trader/GetInfo", R),
    ("/poolrpc.Trader/GetLsatTokens", R),
    ("/poolrpc.Trader/InitAccount", W),
    ("/poolrpc.Trader/LeaseDurations", R),
    ("/poolrpc.Trader/Leases", R),
    ("/poolrpc.Trader/ListAccounts", R),
    ("/poolrpc.Trader/ListOrders", R),
    ("/poolrpc.Trader/ListSidecars", R),
    ("/poolrpc.Trader/NextBatchInfo", R),
    ("/poolrpc.Trader/NodeRatings", R),
    ("/poolrpc.Trader/OfferSidecar", W),
    ("/poolrpc.Trader/QuoteAccount", R),
    ("/poolrpc.Trader/QuoteOrder", R),
    ("/poolrpc.Trader/RecoverAccounts", W),
    ("/poolrpc.Trader/RegisterSidecar", W),
    ("/poolrpc.Trader/RenewAccount", W),
    ("/poolrpc.Trader/StopDaemon", W),
    ("/poolrpc.Trader/SubmitOrder", W),
    ("/poolrpc.Trader/WithdrawAccount", W),
    ("/priceoraclerpc.PriceOracle/QueryAssetRates", R),
    ("/rfqrpc.Rfq/AddAssetBuyOffer", W),
    ("/rfqrpc.Rfq/AddAssetBuyOrder", W),
    ("/rfqrpc.Rfq/AddAssetSellOffer", W),
    ("/rfqrpc.Rfq/AddAssetSellOrder", W),
    ("/rfqrpc.Rfq/QueryPeerAcceptedQuotes", R),
    ("/rfqrpc.Rfq/SubscribeRfqEventNtfns", R),
    ("/routerrpc.Router/BuildRoute", R),
    ("/routerrpc.Router/EstimateRouteFee", R),
    ("/routerrpc.Router/GetMissionControlConfig", R),
    ("/routerrpc.Router/HtlcInterceptor", W),
    ("/routerrpc.Router/QueryMissionControl", R),
    ("/routerrpc.Router/QueryProbability", R),
    ("/routerrpc.Router/ResetMissionControl", W),
    ("/routerrpc.Router/SendPayment", W),
    ("/routerrpc.Router/SendPaymentV2", W),
    ("/routerrpc.Router/SendToRoute", W),
    ("/routerrpc.Router/SendToRouteV2", W),
    ("/routerrpc.Router/SetMissionControlConfig", W),
    ("/routerrpc.Router/SubscribeHtlcEvents", R),
    ("/routerrpc.Router/TrackPayment", R),
    ("/routerrpc.Router/TrackPaymentV2", R),
    ("/routerrpc.Router/TrackPayments", R),
    ("/routerrpc.Router/UpdateChanStatus", W),
    ("/routerrpc.Router/XAddLocalChanAliases", W),
    ("/routerrpc.Router/XDeleteLocalChanAliases", W),
    ("/routerrpc.Router/XFindBaseLocalChanAlias", W),
    ("/routerrpc.Router/XImportMissionControl", W),
    ("/signrpc.Signer/ComputeInputScript", W),
    ("/signrpc.Signer/DeriveSharedKey", W),
    ("/signrpc.Signer/MuSig2Cleanup", W),
    ("/signrpc.Signer/MuSig2CombineKeys", R),
    ("/signrpc.Signer/MuSig2CombineSig", W),
    ("/signrpc.Signer/MuSig2CreateSession", W),
    ("/signrpc.Signer/MuSig2RegisterNonces", W),
    ("/signrpc.Signer/MuSig2Sign", W),
    ("/signrpc.Signer/SignMessage", W),
    ("/signrpc.Signer/SignOutputRaw", W),
    ("/signrpc.Signer/VerifyMessage", R),
    ("/tapchannelrpc.TaprootAssetChannels/AddInvoice", W),
    ("/tapchannelrpc.TaprootAssetChannels/DecodeAssetPayReq", R),
    ("/tapchannelrpc.TaprootAssetChannels/EncodeCustomRecords", R),
    ("/tapchannelrpc.TaprootAssetChannels/FundChannel", W),
    ("/tapchannelrpc.TaprootAssetChannels/SendPayment", W),
    ("/tapdevrpc.TapDev/ImportProof", W),
    ("/taprpc.TaprootAssets/AddrReceives", R),
    ("/taprpc.TaprootAssets/BurnAsset", W),
    ("/taprpc.TaprootAssets/DebugLevel", W),
    ("/taprpc.TaprootAssets/DecodeAddr", R),
    ("/taprpc.TaprootAssets/DecodeProof", R),
    ("/taprpc.TaprootAssets/ExportProof", R),
    ("/taprpc.TaprootAssets/FetchAssetMeta", R),
    ("/taprpc.TaprootAssets/GetInfo", R),
    ("/taprpc.TaprootAssets/ListAssets", R),
    ("/taprpc.TaprootAssets/ListBalances", R),
    ("/taprpc.TaprootAssets/ListBurns", R),
    ("/taprpc.TaprootAssets/ListGroups", R),
    ("/taprpc.TaprootAssets/ListTransfers", R),
    ("/taprpc.TaprootAssets/ListUtxos", R),
    ("/taprpc.TaprootAssets/NewAddr", W),
    ("/taprpc.TaprootAssets/QueryAddrs", R),
    ("/taprpc.TaprootAssets/RegisterTransfer", W),
    ("/taprpc.TaprootAssets/SendAsset", W),
    ("/taprpc.TaprootAssets/StopDaemon", W),
    ("/taprpc.TaprootAssets/SubscribeReceiveEvents", R),
    ("/taprpc.TaprootAssets/SubscribeSendEvents", R),
    ("/taprpc.TaprootAssets/UnpackProofFile", R),
    ("/taprpc.TaprootAssets/VerifyProof", R),
    ("/universerpc.Universe/AddFederationServer", W),
    ("/universerpc.Universe/AssetLeafKeys", R),
    ("/universerpc.Universe/AssetLeaves", R),
    ("/universerpc.Universe/AssetRoots", R),
    ("/universerpc.Universe/DeleteAssetRoot", W),
    ("/universerpc.Universe/DeleteFederationServer", W),
    ("/universerpc.Universe/Info", R),
    ("/universerpc.Universe/InsertProof", W),
    ("/universerpc.Universe/ListFederationServers", R),
    ("/universerpc.Universe/MultiverseRoot", R),
    ("/universerpc.Universe/PushProof", W),
    ("/universerpc.Universe/QueryAssetRoots", R),
    ("/universerpc.Universe/QueryAssetStats", R),
    ("/universerpc.Universe/QueryEvents", R),
    ("/universerpc.Universe/QueryFederationSyncConfig", R),
    ("/universerpc.Universe/QueryProof", R),
    ("/universerpc.Universe/SetFederationSyncConfig", W),
    ("/universerpc.Universe/SyncUniverse", W),
    ("/universerpc.Universe/UniverseStats", R),
    ("/verrpc.Versioner/GetVersion", R),
    ("/walletrpc.WalletKit/BumpFee", W),
    ("/walletrpc.WalletKit/BumpForceCloseFee", W),
    ("/walletrpc.WalletKit/DeriveKey", R),
    ("/walletrpc.WalletKit/DeriveNextKey", R),
    ("/walletrpc.WalletKit/EstimateFee", R),
    ("/walletrpc.WalletKit/FinalizePsbt", W),
    ("/walletrpc.WalletKit/FundPsbt", W),
    ("/walletrpc.WalletKit/GetTransaction", R),
    ("/walletrpc.WalletKit/ImportAccount", W),
    ("/walletrpc.WalletKit/ImportPublicKey", W),
    ("/walletrpc.WalletKit/ImportTapscript", W),
    ("/walletrpc.WalletKit/LabelTransaction", W),
    ("/walletrpc.WalletKit/LeaseOutput", W),
    ("/walletrpc.WalletKit/ListAccounts", R),
    ("/walletrpc.WalletKit/ListAddresses", R),
    ("/walletrpc.WalletKit/ListLeases", R),
    ("/walletrpc.WalletKit/ListSweeps", R),
    ("/walletrpc.WalletKit/ListUnspent", R),
    ("/walletrpc.WalletKit/NextAddr", W),
    ("/walletrpc.WalletKit/PendingSweeps", R),
    ("/walletrpc.WalletKit/PublishTransaction", W),
    ("/walletrpc.WalletKit/ReleaseOutput", W),
    ("/walletrpc.WalletKit/RemoveTransaction", W),
    ("/walletrpc.WalletKit/RequiredReserve", R),
    ("/walletrpc.WalletKit/SendOutputs", W),
    ("/walletrpc.WalletKit/SignMessageWithAddr", W),
    ("/walletrpc.WalletKit/SignPsbt", W),
    ("/walletrpc.WalletKit/VerifyMessageWithAddr", R),
    ("/watchtowerrpc.Watchtower/GetInfo", R),
    ("/wtclientrpc.WatchtowerClient/AddTower", W),
    ("/wtclientrpc.WatchtowerClient/DeactivateTower", W),
    ("/wtclientrpc.WatchtowerClient/GetTowerInfo", R),
    ("/wtclientrpc.WatchtowerClient/ListTowers", R),
    ("/wtclientrpc.WatchtowerClient/Policy", R),
    ("/wtclientrpc.WatchtowerClient/RemoveTower", W),
    ("/wtclientrpc.WatchtowerClient/Stats", R),
    ("/wtclientrpc.WatchtowerClient/TerminateSession", W),
];

/// REST mappings: HTTP method, grpc-gateway path pattern (`{x}` matches one non-empty
/// segment), gRPC method. Matched in order; more specific patterns need no ordering because
/// segment counts differ wherever literal and parameter segments could collide.
#[rustfmt::skip]
pub static REST_ROUTES: &[(Method, &str, &str)] = &[
    // litrpc (litrpc/*.yaml, Accounts included).
    (Method::POST, "/v1/sessions", "/litrpc.Sessions/AddSession"),
    (Method::GET, "/v1/sessions", "/litrpc.Sessions/ListSessions"),
    (Method::DELETE, "/v1/sessions/{local_public_key}", "/litrpc.Sessions/RevokeSession"),
    (Method::GET, "/v1/autopilot/features", "/litrpc.Autopilot/ListAutopilotFeatures"),
    (Method::POST, "/v1/autopilot/sessions", "/litrpc.Autopilot/AddAutopilotSession"),
    (Method::GET, "/v1/autopilot/sessions", "/litrpc.Autopilot/ListAutopilotSessions"),
    (Method::DELETE, "/v1/autopilot/sessions/{local_public_key}", "/litrpc.Autopilot/RevokeAutopilotSession"),
    (Method::POST, "/v1/firewall/actions", "/litrpc.Firewall/ListActions"),
    (Method::POST, "/v1/firewall/privacy_map/convert", "/litrpc.Firewall/PrivacyMapConversion"),
    (Method::GET, "/v1/status", "/litrpc.Status/SubServerStatus"),
    (Method::GET, "/v1/proxy/info", "/litrpc.Proxy/GetInfo"),
    (Method::POST, "/v1/proxy/stop", "/litrpc.Proxy/StopDaemon"),
    (Method::POST, "/v1/proxy/supermacaroon", "/litrpc.Proxy/BakeSuperMacaroon"),
    (Method::POST, "/v1/accounts", "/litrpc.Accounts/CreateAccount"),
    (Method::GET, "/v1/accounts", "/litrpc.Accounts/ListAccounts"),
    (Method::GET, "/v1/accounts/payments", "/litrpc.Accounts/AccountPayments"),
    (Method::POST, "/v1/accounts/credit/{account.id}", "/litrpc.Accounts/CreditAccount"),
    (Method::POST, "/v1/accounts/debit/{account.id}", "/litrpc.Accounts/DebitAccount"),
    (Method::POST, "/v1/accounts/{id}", "/litrpc.Accounts/UpdateAccount"),
    (Method::DELETE, "/v1/accounts/{id}", "/litrpc.Accounts/RemoveAccount"),
    // lnrpc.Lightning (lightning.yaml).
    (Method::GET, "/v1/getinfo", "/lnrpc.Lightning/GetInfo"),
    (Method::GET, "/v1/getdebuginfo", "/lnrpc.Lightning/GetDebugInfo"),
    (Method::GET, "/v1/getrecoveryinfo", "/lnrpc.Lightning/GetRecoveryInfo"),
    (Method::GET, "/v1/balance/blockchain", "/lnrpc.Lightning/WalletBalance"),
    (Method::GET, "/v1/balance/channels", "/lnrpc.Lightning/ChannelBalance"),
    (Method::GET, "/v1/transactions", "/lnrpc.Lightning/GetTransactions"),
    (Method::POST, "/v1/transactions", "/lnrpc.Lightning/SendCoins"),
    (Method::GET, "/v1/transactions/fee", "/lnrpc.Lightning/EstimateFee"),
    (Method::POST, "/v1/transactions/many", "/lnrpc.Lightning/SendMany"),
    (Method::GET, "/v1/transactions/subscribe", "/lnrpc.Lightning/SubscribeTransactions"),
    (Method::GET, "/v1/utxos", "/lnrpc.Lightning/ListUnspent"),
    (Method::GET, "/v1/newaddress", "/lnrpc.Lightning/NewAddress"),
    (Method::POST, "/v1/signmessage", "/lnrpc.Lightning/SignMessage"),
    (Method::POST, "/v1/verifymessage", "/lnrpc.Lightning/VerifyMessage"),
    (Method::GET, "/v1/peers", "/lnrpc.Lightning/ListPeers"),
    (Method::POST, "/v1/peers", "/lnrpc.Lightning/ConnectPeer"),
    (Method::GET, "/v1/peers/subscribe", "/lnrpc.Lightning/SubscribePeerEvents"),
    (Method::DELETE, "/v1/peers/{pub_key}", "/lnrpc.Lightning/DisconnectPeer"),
    (Method::GET, "/v1/channels", "/lnrpc.Lightning/ListChannels"),
    (Method::POST, "/v1/channels", "/lnrpc.Lightning/OpenChannelSync"),
    (Method::GET, "/v1/channels/pending", "/lnrpc.Lightning/PendingChannels"),
    (Method::GET, "/v1/channels/closed", "/lnrpc.Lightning/ClosedChannels"),
    (Method::GET, "/v1/channels/subscribe", "/lnrpc.Lightning/SubscribeChannelEvents"),
    (Method::POST, "/v1/channels/stream", "/lnrpc.Lightning/OpenChannel"),
    (Method::POST, "/v1/channels/batch", "/lnrpc.Lightning/BatchOpenChannel"),
    (Method::POST, "/v1/funding/step", "/lnrpc.Lightning/FundingStateStep"),
    (Method::DELETE, "/v1/channels/{channel_point.funding_txid_str}/{channel_point.output_index}", "/lnrpc.Lightning/CloseChannel"),
    (Method::DELETE, "/v1/channels/abandon/{channel_point.funding_txid_str}/{channel_point.output_index}", "/lnrpc.Lightning/AbandonChannel"),
    (Method::POST, "/v1/channels/transactions", "/lnrpc.Lightning/SendPaymentSync"),
    (Method::POST, "/v1/channels/transaction-stream", "/lnrpc.Lightning/SendPayment"),
    (Method::POST, "/v1/channels/transactions/route", "/lnrpc.Lightning/SendToRouteSync"),
    (Method::GET, "/v1/channels/backup", "/lnrpc.Lightning/ExportAllChannelBackups"),
    (Method::GET, "/v1/channels/backup/{chan_point.funding_txid_str}/{chan_point.output_index}", "/lnrpc.Lightning/ExportChannelBackup"),
    (Method::POST, "/v1/channels/backup/verify", "/lnrpc.Lightning/VerifyChanBackup"),
    (Method::POST, "/v1/channels/backup/restore", "/lnrpc.Lightning/RestoreChannelBackups"),
    (Method::GET, "/v1/channels/backup/subscribe", "/lnrpc.Lightning/SubscribeChannelBackups"),
    (Method::GET, "/v1/invoices", "/lnrpc.Lightning/ListInvoices"),
    (Method::POST, "/v1/invoices", "/lnrpc.Lightning/AddInvoice"),
    (Method::GET, "/v1/invoices/subscribe", "/lnrpc.Lightning/SubscribeInvoices"),
    (Method::GET, "/v1/invoice/{r_hash_str}", "/lnrpc.Lightning/LookupInvoice"),
    (Method::GET, "/v1/payreq/{pay_req}", "/lnrpc.Lightning/DecodePayReq"),
    (Method::GET, "/v1/payments", "/lnrpc.Lightning/ListPayments"),
    (Method::DELETE, "/v1/payment", "/lnrpc.Lightning/DeletePayment"),
    (Method::DELETE, "/v1/payments", "/lnrpc.Lightning/DeleteAllPayments"),
    (Method::GET, "/v1/graph", "/lnrpc.Lightning/DescribeGraph"),
    (Method::GET, "/v1/graph/info", "/lnrpc.Lightning/GetNetworkInfo"),
    (Method::GET, "/v1/graph/nodemetrics", "/lnrpc.Lightning/GetNodeMetrics"),
    (Method::GET, "/v1/graph/subscribe", "/lnrpc.Lightning/SubscribeChannelGraph"),
    (Method::GET, "/v1/graph/edge/{chan_id}", "/lnrpc.Lightning/GetChanInfo"),
    (Method::GET, "/v1/graph/node/{pub_key}", "/lnrpc.Lightning/GetNodeInfo"),
    (Method::GET, "/v1/graph/routes/{pub_key}/{amt}", "/lnrpc.Lightning/QueryRoutes"),
    (Method::POST, "/v1/graph/routes", "/lnrpc.Lightning/QueryRoutes"),
    (Method::POST, "/v1/stop", "/lnrpc.Lightning/StopDaemon"),
    (Method::POST, "/v1/debuglevel", "/lnrpc.Lightning/DebugLevel"),
    (Method::GET, "/v1/fees", "/lnrpc.Lightning/FeeReport"),
    (Method::POST, "/v1/chanpolicy", "/lnrpc.Lightning/UpdateChannelPolicy"),
    (Method::POST, "/v1/switch", "/lnrpc.Lightning/ForwardingHistory"),
    (Method::POST, "/v1/macaroon", "/lnrpc.Lightning/BakeMacaroon"),
    (Method::GET, "/v1/macaroon/ids", "/lnrpc.Lightning/ListMacaroonIDs"),
    (Method::GET, "/v1/macaroon/permissions", "/lnrpc.Lightning/ListPermissions"),
    (Method::POST, "/v1/macaroon/checkpermissions", "/lnrpc.Lightning/CheckMacaroonPermissions"),
    (Method::DELETE, "/v1/macaroon/{root_key_id}", "/lnrpc.Lightning/DeleteMacaroonID"),
    (Method::POST, "/v1/custommessage", "/lnrpc.Lightning/SendCustomMessage"),
    (Method::GET, "/v1/custommessage/subscribe", "/lnrpc.Lightning/SubscribeCustomMessages"),
    (Method::GET, "/v1/aliases/list", "/lnrpc.Lightning/ListAliases"),
    (Method::GET, "/v1/htlc-resolution/{chan_id}/{htlc_index}", "/lnrpc.Lightning/LookupHtlcResolution"),
    // lnrpc.WalletUnlocker and lnrpc.State (walletunlocker.yaml, stateservice.yaml).
    (Method::GET, "/v1/genseed", "/lnrpc.WalletUnlocker/GenSeed"),
    (Method::POST, "/v1/initwallet", "/lnrpc.WalletUnlocker/InitWallet"),
    (Method::POST, "/v1/unlockwallet", "/lnrpc.WalletUnlocker/UnlockWallet"),
    (Method::POST, "/v1/changepassword", "/lnrpc.WalletUnlocker/ChangePassword"),
    (Method::GET, "/v1/state", "/lnrpc.State/GetState"),
    (Method::GET, "/v1/state/subscribe", "/lnrpc.State/SubscribeState"),
    // lnd sub-servers (router.yaml, walletkit.yaml, invoices.yaml).
    (Method::POST, "/v2/router/send", "/routerrpc.Router/SendPaymentV2"),
    (Method::GET, "/v2/router/track/{payment_hash}", "/routerrpc.Router/TrackPaymentV2"),
    (Method::POST, "/v2/router/route/send", "/routerrpc.Router/SendToRouteV2"),
    (Method::POST, "/v2/router/route/estimatefee", "/routerrpc.Router/EstimateRouteFee"),
    (Method::POST, "/v2/router/route", "/routerrpc.Router/BuildRoute"),
    (Method::GET, "/v2/router/mc", "/routerrpc.Router/QueryMissionControl"),
    (Method::POST, "/v2/router/mc/reset", "/routerrpc.Router/ResetMissionControl"),
    (Method::POST, "/v2/invoices/hodl", "/invoicesrpc.Invoices/AddHoldInvoice"),
    (Method::POST, "/v2/invoices/settle", "/invoicesrpc.Invoices/SettleInvoice"),
    (Method::POST, "/v2/invoices/cancel", "/invoicesrpc.Invoices/CancelInvoice"),
    (Method::GET, "/v2/invoices/subscribe/{r_hash}", "/invoicesrpc.Invoices/SubscribeSingleInvoice"),
    (Method::POST, "/v2/wallet/address/next", "/walletrpc.WalletKit/NextAddr"),
    (Method::POST, "/v2/wallet/utxos", "/walletrpc.WalletKit/ListUnspent"),
    (Method::POST, "/v2/wallet/tx", "/walletrpc.WalletKit/PublishTransaction"),
    (Method::POST, "/v2/wallet/send", "/walletrpc.WalletKit/SendOutputs"),
    (Method::POST, "/v2/wallet/bumpfee", "/walletrpc.WalletKit/BumpFee"),
    (Method::POST, "/v2/wallet/psbt/fund", "/walletrpc.WalletKit/FundPsbt"),
    (Method::POST, "/v2/wallet/psbt/sign", "/walletrpc.WalletKit/SignPsbt"),
    (Method::POST, "/v2/wallet/psbt/finalize", "/walletrpc.WalletKit/FinalizePsbt"),
    // looprpc.SwapClient (loop's swapclient.yaml).
    (Method::POST, "/v1/loop/out", "/looprpc.SwapClient/LoopOut"),
    (Method::POST, "/v1/loop/in", "/looprpc.SwapClient/LoopIn"),
    (Method::GET, "/v1/loop/swaps", "/looprpc.SwapClient/ListSwaps"),
    (Method::GET, "/v1/loop/swap/{id}", "/looprpc.SwapClient/SwapInfo"),
];

/// [`GRPC_METHODS`] by path: every call is classified, and a hashed lookup costs a fraction
/// of a binary search's string comparisons over some 500 paths. Only ever read (a caller's
/// path is looked up, never inserted), so a fast hash is safe here.
static GRPC_INDEX: LazyLock<HashMap<&'static str, Class, foldhash::fast::RandomState>> =
    LazyLock::new(|| GRPC_METHODS.iter().copied().collect());

/// The class of one gRPC method path; unknown methods are writes, as in litd.
pub fn grpc_class(path: &str) -> Class {
    GRPC_INDEX.get(path).copied().unwrap_or(Class::Write)
}

/// Whether the method table knows the gRPC method `path` (`/pkg.Service/Method`).
pub fn is_known(path: &str) -> bool {
    GRPC_INDEX.contains_key(path)
}

/// The method names the table knows in the service `path` names (`/pkg.Service/...`), for a
/// message that suggests what a misspelled path meant.
pub fn known_in_service(path: &str) -> Vec<&'static str> {
    let Some(service) = path.rfind('/').map(|i| &path[..=i]) else {
        return Vec::new();
    };
    GRPC_METHODS
        .iter()
        .filter_map(|(p, _)| p.strip_prefix(service))
        .collect()
}

/// Whether litd checks the caller's macaroon before answering `grpc_method` with OK, so that
/// an OK proves the credential genuine. False for unknown methods (litd may serve them open),
/// for the whitelisted ones (`litrpc.Status`, lnd's `WalletUnlocker` and `State`), and for
/// `universerpc` (tapd's `universe.public-access` can open its reads to anyone).
pub fn verifies_macaroon(grpc_method: &str) -> bool {
    const OPEN: [&str; 4] = [
        "/litrpc.Status/",
        "/lnrpc.WalletUnlocker/",
        "/lnrpc.State/",
        "/universerpc.Universe/",
    ];
    is_known(grpc_method) && !OPEN.iter().any(|prefix| grpc_method.starts_with(prefix))
}

/// The gRPC method a REST request is the twin of, when the table knows it.
pub fn grpc_method_for_rest(method: &Method, path: &str) -> Option<&'static str> {
    REST_ROUTES
        .iter()
        .find(|(m, pattern, _)| m == method && pattern_matches(pattern, path))
        .map(|(_, _, grpc)| *grpc)
}

/// The gRPC method a request names (its path for gRPC and grpc-web, the mapped method for a
/// known REST path; `None` otherwise) and its class, with one table lookup: a gRPC path
/// (`/pkg.Service/Method`, also used by grpc-web) by the method table; a REST path by the gRPC
/// method it maps to, or, when it maps to none, GET/HEAD as reads and everything else as
/// writes; the same rule for anything else (the UI's static files).
pub fn classify<'a>(method: &Method, path: &'a str) -> (Option<&'a str>, Class) {
    let grpc = grpc_method(method, path);
    let class = match grpc {
        Some(g) => grpc_class(g),
        None if method == Method::GET || method == Method::HEAD => Class::Read,
        None => Class::Write,
    };
    (grpc, class)
}

/// The gRPC method a request names: its path for gRPC and grpc-web, the mapped method for a
/// known REST path; `None` otherwise. Used to find per-method limit overrides.
pub fn grpc_method<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if is_rest_path(path) {
        grpc_method_for_rest(method, path)
    } else if is_grpc_shaped(path) {
        Some(path)
    } else {
        None
    }
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    // Most patterns are literal, and the rest share a literal prefix with the path: compare
    // bytes first, segments only past the first parameter.
    let Some(param) = pattern.find('{') else {
        return pattern == path;
    };
    let Some(path_rest) = path.strip_prefix(&pattern[..param]) else {
        return false;
    };
    let mut want = pattern[param..].split('/');
    let mut got = path_rest.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) => {
                let ok = if w.starts_with('{') {
                    !g.is_empty()
                } else {
                    w == g
                };
                if !ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: &Method, path: &str) -> Class {
        classify(method, path).1
    }

    #[test]
    fn grpc_table_is_sorted_unique_and_well_formed() {
        for w in GRPC_METHODS.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
        for (p, _) in GRPC_METHODS {
            assert!(is_grpc_shaped(p), "{p}");
        }
    }

    #[test]
    fn every_rest_route_names_a_known_method() {
        for (m, pattern, grpc) in REST_ROUTES {
            assert!(
                GRPC_METHODS
                    .binary_search_by(|(p, _)| (*p).cmp(grpc))
                    .is_ok(),
                "{m} {pattern} -> {grpc} is not in GRPC_METHODS"
            );
            assert!(is_rest_path(pattern), "{pattern}");
        }
    }

    #[test]
    fn litrpc_matches_the_spec_permission_map() {
        // LiT's perms/permissions.go, row by row.
        let reads = [
            "/litrpc.Sessions/ListSessions",
            "/litrpc.Accounts/ListAccounts",
            "/litrpc.Accounts/AccountInfo",
            "/litrpc.Accounts/AccountPayments",
            "/litrpc.Firewall/ListActions",
            "/litrpc.Firewall/PrivacyMapConversion",
            "/litrpc.Autopilot/ListAutopilotFeatures",
            "/litrpc.Autopilot/ListAutopilotSessions",
            "/litrpc.Proxy/GetInfo",
            "/litrpc.Status/SubServerStatus",
        ];
        let writes = [
            "/litrpc.Sessions/AddSession",
            "/litrpc.Sessions/RevokeSession",
            "/litrpc.Accounts/CreateAccount",
            "/litrpc.Accounts/UpdateAccount",
            "/litrpc.Accounts/CreditAccount",
            "/litrpc.Accounts/DebitAccount",
            "/litrpc.Accounts/RemoveAccount",
            "/litrpc.Autopilot/AddAutopilotSession",
            "/litrpc.Autopilot/RevokeAutopilotSession",
            "/litrpc.Proxy/StopDaemon",
            "/litrpc.Proxy/BakeSuperMacaroon",
        ];
        for p in reads {
            assert_eq!(grpc_class(p), Class::Read, "{p}");
        }
        for p in writes {
            assert_eq!(grpc_class(p), Class::Write, "{p}");
        }
        let litrpc = GRPC_METHODS
            .iter()
            .filter(|(p, _)| p.starts_with("/litrpc."))
            .count();
        assert_eq!(litrpc, reads.len() + writes.len());
    }

    #[test]
    fn unknown_methods_are_writes_and_generate_is_not_read() {
        assert_eq!(grpc_class("/lnrpc.Lightning/NoSuchCall"), Class::Write);
        assert_eq!(grpc_class("/litgatetest.Echo/ServerStream"), Class::Write);
        assert_eq!(grpc_class("/lnrpc.Lightning/BakeMacaroon"), Class::Write);
        assert_eq!(grpc_class("/lnrpc.Lightning/GetInfo"), Class::Read);
        assert_eq!(
            grpc_class("/lnrpc.Lightning/SubscribeInvoices"),
            Class::Read
        );
    }

    #[test]
    fn only_known_authenticated_methods_verify_macaroons() {
        assert!(verifies_macaroon("/lnrpc.Lightning/GetInfo"));
        assert!(verifies_macaroon("/litrpc.Sessions/ListSessions"));
        assert!(!verifies_macaroon("/litrpc.Status/SubServerStatus"));
        assert!(!verifies_macaroon("/lnrpc.WalletUnlocker/GenSeed"));
        assert!(!verifies_macaroon("/lnrpc.State/GetState"));
        assert!(!verifies_macaroon("/universerpc.Universe/QueryProof"));
        assert!(!verifies_macaroon("/litgatetest.Echo/Unary"));
    }

    #[test]
    fn rest_paths_map_to_their_methods() {
        let cases: &[(Method, &str, Option<&str>, Class)] = &[
            (
                Method::GET,
                "/v1/getinfo",
                Some("/lnrpc.Lightning/GetInfo"),
                R,
            ),
            (
                Method::GET,
                "/v1/sessions",
                Some("/litrpc.Sessions/ListSessions"),
                R,
            ),
            (
                Method::POST,
                "/v1/sessions",
                Some("/litrpc.Sessions/AddSession"),
                W,
            ),
            (
                Method::DELETE,
                "/v1/sessions/AqEh",
                Some("/litrpc.Sessions/RevokeSession"),
                W,
            ),
            (
                Method::DELETE,
                "/v1/autopilot/sessions/AqEh",
                Some("/litrpc.Autopilot/RevokeAutopilotSession"),
                W,
            ),
            (Method::DELETE, "/v1/sessions/", None, W),
            (
                Method::POST,
                "/v1/firewall/actions",
                Some("/litrpc.Firewall/ListActions"),
                R,
            ),
            (
                Method::GET,
                "/v1/newaddress",
                Some("/lnrpc.Lightning/NewAddress"),
                W,
            ),
            (
                Method::POST,
                "/v1/switch",
                Some("/lnrpc.Lightning/ForwardingHistory"),
                R,
            ),
            (
                Method::DELETE,
                "/v1/channels/abc/1",
                Some("/lnrpc.Lightning/CloseChannel"),
                W,
            ),
            (
                Method::GET,
                "/v1/graph/routes/02ab/1000",
                Some("/lnrpc.Lightning/QueryRoutes"),
                R,
            ),
            (Method::GET, "/v1/unknown/thing", None, R),
            (Method::POST, "/v1/unknown/thing", None, W),
            (Method::GET, "/index.html", None, R),
            (Method::POST, "/index.html", None, W),
        ];
        for (m, p, grpc, want) in cases {
            assert_eq!(grpc_method(m, p), *grpc, "{m} {p}");
            assert_eq!(class(m, p), *want, "{m} {p}");
        }
    }
}
