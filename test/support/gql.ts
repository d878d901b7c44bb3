/** Contract operations used across tests (operations.graphql), plus fields our tests inspect. */
export const PREDICT = `mutation Predict($input: PredictInput!) {
  predict(input: $input) { id status output error { code message } createdAt startedAt completedAt usage { seconds hardware } attempt node { id } }
}`;
export const PREDICTION = `query Prediction($id: ID!) {
  prediction(id: $id) { id status progress output error { code message } logs node { id } usage { seconds hardware } attempt startedAt }
}`;
export const PREDICTIONS = `query Predictions($first: Int, $after: String) {
  predictions(first: $first, after: $after) { edges { node { id status createdAt } } pageInfo { hasNextPage endCursor } }
}`;
export const CANCEL = `mutation CancelPrediction($id: ID!) { cancelPrediction(id: $id) { id status } }`;
export const SET_QUOTA = `mutation SetQuota($input: SetQuotaInput!) { setQuota(input: $input) { tenant { id } hardware guaranteed limit } }`;
export const QUOTAS = `query Quotas { quotas { tenant { id name } hardware guaranteed limit used } }`;
export const NODES = `query Nodes { nodes { id name hardware gpuCount gpuModel status lastHeartbeatAt runningJobs } }`;
